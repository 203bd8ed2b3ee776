package agentapi

import "time"

// Role is who wrote a message.
type Role string

// Roles of a conversation.
const (
	RoleUser  Role = "user"
	RoleAgent Role = "agent"
)

// Message is one turn of a conversation with an agent. IDs start at 0 and
// give the order; the last agent message may still grow while the agent is
// running.
type Message struct {
	ID      int       `json:"id"`
	Content string    `json:"content"`
	Role    Role      `json:"role"`
	Time    time.Time `json:"time"`
}

// AgentStatus is what an agent is doing: "running" while its screen
// changes or a message is being delivered, "stable" once it has settled.
type AgentStatus string

// Agent statuses, as the upstream AgentAPI reports them.
const (
	StatusRunning AgentStatus = "running"
	StatusStable  AgentStatus = "stable"
)
