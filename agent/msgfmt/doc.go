// Package msgfmt knows what each supported terminal agent's screen looks
// like: which agent types exist, whether a screen shows the agent ready for
// input, and how to turn the part of the screen that changed after a user
// message into the agent's reply (the echoed input, the input box and other
// UI chrome removed, no terminal padding).
//
// The contract, shared by every agent type:
//
//   - ParseAgentType accepts the names of `agentapi server --type` and
//     their aliases; GuessAgentType picks a type from the agent command.
//   - IsReady(t, screen) reports whether screen shows t's input prompt, so
//     that a message typed now would be accepted.
//   - FormatMessage(t, changed, userInput) returns the agent's reply: the
//     lines of changed (the screen region that changed since the user's
//     message was sent) without the echo of userInput, without t's input
//     box, status bars and spinners, with trailing spaces trimmed from every
//     line and leading/trailing blank lines removed. It never returns text
//     that was not in changed.
//   - RemoveToolCalls(t, message) strips tool-call blocks for agents that
//     print them, returning the message and the removed blocks.
package msgfmt
