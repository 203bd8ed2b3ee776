package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/agentapi-mt/agentapi"
)

// State is what a state file keeps of a conversation.
type State struct {
	Version   int                `json:"version"`
	AgentType string             `json:"agent_type"`
	SavedAt   time.Time          `json:"saved_at"`
	Messages  []agentapi.Message `json:"messages"`
}

const stateVersion = 1

// SaveState writes the conversation to path atomically: a crash leaves
// either the old file or the new one, never half of one.
func SaveState(path string, st State) error {
	st.Version = stateVersion
	if st.Messages == nil {
		st.Messages = []agentapi.Message{}
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("saving state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".agentapi-state-*")
	if err != nil {
		return fmt.Errorf("saving state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("saving state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("saving state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("saving state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("saving state: %w", err)
	}
	return nil
}

// LoadState reads a state file. A missing file is (State{}, false, nil).
func LoadState(path string) (State, bool, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return State{}, false, nil
	}
	if err != nil {
		return State{}, false, fmt.Errorf("loading state: %w", err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return State{}, false, fmt.Errorf("loading state from %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return State{}, false, fmt.Errorf("loading state from %s: version %d, want %d", path, st.Version, stateVersion)
	}
	return st, true, nil
}
