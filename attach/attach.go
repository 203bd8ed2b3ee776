// Package attach is `agentapi attach`: a live terminal view of an agent
// served by `agentapi server`, with the keyboard forwarded to it. It follows
// GET /internal/screen (SSE) and sends every keystroke as a raw message, so
// it works against any server speaking the AgentAPI protocol.
package attach

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DetachKey ends an attach session (Ctrl-]); every other key goes to the
// agent, Ctrl-C included.
const DetachKey = 0x1d

// Options configure Run.
type Options struct {
	// URL is the server: "localhost:3284", or a full http(s) URL, possibly
	// with a path prefix.
	URL string
	In  *os.File
	Out *os.File
	// Client defaults to a client without timeout (the screen stream is
	// long-lived).
	Client *http.Client
}

// Run attaches until the detach key, ctx's end, or the server going away.
func Run(ctx context.Context, o Options) error {
	base, err := baseURL(o.URL)
	if err != nil {
		return err
	}
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"internal/screen", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := o.Client.Do(req)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("connecting to %s: HTTP %d", base, resp.StatusCode)
	}

	restore, err := makeRaw(o.In)
	if err == nil {
		defer restore()
	}
	fmt.Fprint(o.Out, "\x1b[?1049h") // alternate screen: the user's scrollback is left alone
	defer fmt.Fprint(o.Out, "\x1b[?1049l")

	keys := make(chan []byte, 16)
	go readKeys(ctx, o.In, keys)
	screens := make(chan string, 1)
	streamErr := make(chan error, 1)
	go func() { streamErr <- readScreens(resp.Body, screens) }()

	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-streamErr:
			if err == nil || errors.Is(err, io.EOF) {
				return errors.New("the server closed the screen stream (did the agent exit?)")
			}
			return err
		case s := <-screens:
			draw(o.Out, o.In, s)
		case k, ok := <-keys:
			if !ok {
				return nil
			}
			if i := bytes.IndexByte(k, DetachKey); i >= 0 {
				if i > 0 {
					send(ctx, o.Client, base, k[:i])
				}
				return nil
			}
			if err := send(ctx, o.Client, base, k); err != nil {
				return err
			}
		}
	}
}

func baseURL(raw string) (string, error) {
	if raw == "" {
		return "", errors.New("--url is required, e.g. --url localhost:3284")
	}
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("--url %q: want host:port or http(s)://host:port[/prefix]", raw)
	}
	return strings.TrimRight(u.String(), "/") + "/", nil
}

// readScreens parses the SSE stream and keeps only the latest screen.
func readScreens(r io.Reader, out chan string) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var data strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "data:"):
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		case line == "":
			if data.Len() == 0 {
				continue
			}
			var ev struct {
				Screen string `json:"screen"`
			}
			if err := json.Unmarshal([]byte(data.String()), &ev); err == nil {
				select {
				case <-out: // drop a screen not drawn yet
				default:
				}
				out <- ev.Screen
			}
			data.Reset()
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.EOF
}

// draw shows the bottom of the agent's screen that fits the local terminal.
func draw(out, in *os.File, screen string) {
	rows, cols := 24, 80
	if ws, err := unix.IoctlGetWinsize(int(out.Fd()), unix.TIOCGWINSZ); err == nil && ws.Row > 0 {
		rows, cols = int(ws.Row), int(ws.Col)
	}
	lines := strings.Split(strings.TrimRight(screen, "\n "), "\n")
	if len(lines) > rows-1 {
		lines = lines[len(lines)-(rows-1):]
	}
	var b strings.Builder
	b.WriteString("\x1b[H\x1b[2J")
	for _, l := range lines {
		r := []rune(l)
		if len(r) > cols {
			r = r[:cols]
		}
		b.WriteString(string(r))
		b.WriteString("\r\n")
	}
	b.WriteString("\x1b[7m attached: keys go to the agent · Ctrl-] detaches \x1b[0m")
	io.WriteString(out, b.String())
}

func readKeys(ctx context.Context, in *os.File, out chan<- []byte) {
	defer close(out)
	buf := make([]byte, 1024)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			select {
			case out <- append([]byte(nil), buf[:n]...):
			case <-ctx.Done():
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func send(ctx context.Context, c *http.Client, base string, keys []byte) error {
	body, _ := json.Marshal(map[string]string{"content": string(keys), "type": "raw"})
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"message", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("sending keys: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("sending keys: HTTP %d", resp.StatusCode)
	}
	return nil
}

// makeRaw puts the terminal in raw mode so every key reaches the agent.
func makeRaw(f *os.File) (func(), error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN] = 1
	raw.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, err
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}
