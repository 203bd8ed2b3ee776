// Package demo implements AgentAPI's built-in demo agent: a small but real
// terminal user interface that behaves like an AI coding agent's TUI.
//
// It is started as the hidden subcommand `agentapi demo-agent` (agent type
// `echo`) so that tests and new users can drive the whole product — typing
// with bracketed paste, watching a VT-emulated screen, waiting for it to
// become stable and extracting the reply — without installing a real agent.
//
// # Screen layout
//
// The screen is redrawn completely on every change: ESC[H ESC[2J followed by
// the lines below, each terminated by "\r\n". Text is hard-wrapped at the
// terminal width; a wrapped row of a prefixed line ("> ", "● ") continues
// under the two-column indent. When there are more lines than the terminal
// has rows, only the last rows-1 lines are written (exactly what the terminal
// would show after scrolling).
//
//	Demo agent ready. Type a message.          greeting (--greeting)
//	                                           blank
//	> first line of the user's message         one block per exchange
//	  continuation line
//	                                           blank
//	● first line of the reply
//	  continuation line
//	                                           blank
//	⠋ Thinking… (0s · esc to interrupt)        only while thinking
//	╭──────────────────────────────────╮       input box, only when idle
//	│ > current input                  │       (never with --no-prompt)
//	╰──────────────────────────────────╯
//	  ? for shortcuts · /confirm · /exit
//
// While thinking, the exchange being answered is shown after the transcript
// ("> message", blank, and — for a reply that was split with [[pause]] — the
// part of the reply produced so far, blank), then the spinner line, and no
// input box. After the message /confirm, the permission box below replaces
// the input box until a choice is made:
//
//	╭─ Permission ─────────────────────╮
//	│ Run `rm -rf build`?              │
//	│ ❯ 1. Yes                         │
//	│   2. No                          │
//	╰──────────────────────────────────╯
//
// Boxes span the terminal width (at least 20 columns). The greeting, the
// transcript and the replies never contain the box-drawing characters
// ╭ ╮ ╰ ╯ │ ─ (they are shown as + + + + | -), so a line starting with one
// of them always belongs to a box.
package demo
