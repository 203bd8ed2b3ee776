package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/agentapi-mt/agentapi/agent"
	"github.com/agentapi-mt/agentapi/agent/msgfmt"
	"github.com/agentapi-mt/agentapi/agenthttp"
)

// serverFlags are upstream AgentAPI's `server` flags. Each can also be set
// with AGENTAPI_<NAME> (dashes as underscores); lists in the environment
// are space-separated, on the command line comma-separated.
type serverFlags struct {
	agentType      string
	port           int
	printOpenAPI   bool
	chatBasePath   string
	termWidth      int
	termHeight     int
	allowedHosts   []string
	allowedOrigins []string
	initialPrompt  string
	stateFile      string
	loadState      bool
	saveState      bool
	pidFile        string
	verbose        bool
	settleWindow   time.Duration
	command        []string
}

func parseServerFlags(args []string, env func(string) (string, bool)) (*serverFlags, error) {
	f := &serverFlags{}
	fs := pflag.NewFlagSet("agentapi server", pflag.ContinueOnError)
	fs.SetInterspersed(false) // everything from the agent command on is the agent's
	fs.SetOutput(io.Discard)
	fs.StringVarP(&f.agentType, "type", "t", "", "agent type: "+typeNames()+" (guessed from the command when omitted)")
	fs.IntVarP(&f.port, "port", "p", 3284, "port to listen on")
	fs.BoolVarP(&f.printOpenAPI, "print-openapi", "P", false, "print the OpenAPI document and exit")
	fs.StringVarP(&f.chatBasePath, "chat-base-path", "c", "/chat", "path of the chat page")
	fs.IntVarP(&f.termWidth, "term-width", "W", 80, "width of the emulated terminal")
	fs.IntVarP(&f.termHeight, "term-height", "H", 1000, "height of the emulated terminal")
	fs.StringSliceVarP(&f.allowedHosts, "allowed-hosts", "a", agenthttp.DefaultAllowedHosts, "allowed Host header names, without ports ('*' for any)")
	fs.StringSliceVarP(&f.allowedOrigins, "allowed-origins", "o", agenthttp.DefaultAllowedOrigins, "allowed CORS origins ('*' for any)")
	fs.StringVarP(&f.initialPrompt, "initial-prompt", "I", "", "message sent once the agent is ready (also read from piped stdin)")
	fs.StringVarP(&f.stateFile, "state-file", "s", "", "file that keeps the conversation across restarts")
	fs.BoolVar(&f.loadState, "load-state", true, "restore the conversation from --state-file at start")
	fs.BoolVar(&f.saveState, "save-state", true, "save the conversation to --state-file at shutdown and on SIGUSR1")
	fs.StringVar(&f.pidFile, "pid-file", "", "write the server's process id to this file")
	fs.BoolVarP(&f.verbose, "verbose", "v", false, "debug logging")
	fs.DurationVar(&f.settleWindow, "settle-window", 2*time.Second, "how long the screen must stay unchanged for the status to become stable")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, helpError{serverUsage + fs.FlagUsages()}
		}
		return nil, fmt.Errorf("%w\n\n%s%s", err, serverUsage, fs.FlagUsages())
	}
	// Environment fills in what the command line did not set.
	var problems []string
	fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Changed {
			return
		}
		name := "AGENTAPI_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		v, ok := env(name)
		if !ok || v == "" {
			return
		}
		if fl.Value.Type() == "stringSlice" {
			v = strings.Join(strings.Fields(v), ",")
		}
		if err := fl.Value.Set(v); err != nil {
			problems = append(problems, fmt.Sprintf("%s=%q: %v", name, v, err))
		}
	})
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	f.command = fs.Args()
	if f.termWidth < 10 || f.termWidth > 1000 {
		return nil, fmt.Errorf("--term-width %d: want 10 to 1000", f.termWidth)
	}
	if f.termHeight < 10 || f.termHeight > 10000 {
		return nil, fmt.Errorf("--term-height %d: want 10 to 10000", f.termHeight)
	}
	if f.settleWindow < 100*time.Millisecond || f.settleWindow > time.Minute {
		return nil, fmt.Errorf("--settle-window %s: want 100ms to 1m", f.settleWindow)
	}
	if f.port < 0 || f.port > 65535 {
		return nil, fmt.Errorf("--port %d: want 0 to 65535", f.port)
	}
	return f, nil
}

const serverUsage = `Usage: agentapi server [flags] -- <agent command ...>

Runs one terminal coding agent and serves it over HTTP with the API of the
upstream AgentAPI. Every flag can also be set as AGENTAPI_<FLAG> (dashes as
underscores; lists space-separated). With --type echo and no command, runs
the built-in demo agent.

Flags:
`

// helpError carries the usage text for --help, which is not a failure.
type helpError struct{ text string }

func (h helpError) Error() string { return h.text }

func typeNames() string {
	var names []string
	for _, t := range msgfmt.AgentTypes() {
		names = append(names, string(t))
	}
	return strings.Join(names, ", ")
}

// agentCommand resolves the agent type and command: the demo agent runs
// this binary's hidden demo-agent subcommand when no command is given.
func (f *serverFlags) agentCommand() (msgfmt.AgentType, []string, error) {
	cmd := f.command
	var typ msgfmt.AgentType
	if f.agentType != "" {
		t, err := msgfmt.ParseAgentType(f.agentType)
		if err != nil {
			return "", nil, fmt.Errorf("--type: %w", err)
		}
		typ = t
	}
	if len(cmd) == 0 {
		if typ != msgfmt.AgentEcho {
			return "", nil, errors.New("no agent command: use `agentapi server [flags] -- <agent command ...>` (or --type echo for the built-in demo agent)")
		}
		self, err := os.Executable()
		if err != nil {
			return "", nil, err
		}
		cmd = []string{self, "demo-agent"}
	}
	if typ == "" {
		if filepath.Base(cmd[0]) == "agentapi" && len(cmd) > 1 && cmd[1] == "demo-agent" {
			typ = msgfmt.AgentEcho
		} else {
			typ = msgfmt.GuessAgentType(cmd[0])
		}
	}
	return typ, cmd, nil
}

func runServer(args []string, env func(string) (string, bool), stdin io.Reader, stdout, stderr io.Writer) int {
	f, err := parseServerFlags(args, env)
	var help helpError
	if errors.As(err, &help) {
		fmt.Fprint(stdout, help.text)
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "agentapi server:", err)
		return 2
	}
	level := slog.LevelInfo
	if f.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	typ, command, err := f.agentCommand()
	if f.printOpenAPI {
		if typ == "" {
			typ = msgfmt.AgentCustom
		}
		srv, err := agenthttp.New(agenthttp.Config{AgentType: typ, Version: versionString(), AllowedHosts: f.allowedHosts, AllowedOrigins: f.allowedOrigins})
		if err != nil {
			fmt.Fprintln(stderr, "agentapi server:", err)
			return 2
		}
		doc, err := srv.OpenAPI()
		if err != nil {
			fmt.Fprintln(stderr, "agentapi server:", err)
			return 1
		}
		stdout.Write(doc)
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "agentapi server:", err)
		return 2
	}

	prompt := f.initialPrompt
	if prompt == "" {
		if file, ok := stdin.(*os.File); ok {
			if fi, err := file.Stat(); err == nil && fi.Mode()&os.ModeCharDevice == 0 {
				data, err := io.ReadAll(io.LimitReader(file, 1<<20))
				if err != nil {
					fmt.Fprintln(stderr, "agentapi server: reading the initial prompt from stdin:", err)
					return 1
				}
				prompt = strings.TrimSpace(string(data))
			}
		}
	}

	opts := agent.Options{Type: typ, InitialPrompt: prompt, Logger: log, SettleWindow: f.settleWindow}
	if f.stateFile != "" && f.loadState {
		st, ok, err := agent.LoadState(f.stateFile)
		if err != nil {
			fmt.Fprintln(stderr, "agentapi server:", err)
			return 1
		}
		if ok {
			opts.Restore = st.Messages
			log.Info("restored the conversation", "state_file", f.stateFile, "messages", len(st.Messages))
		}
	}

	uploadDir, err := os.MkdirTemp("", "agentapi-uploads-")
	if err != nil {
		fmt.Fprintln(stderr, "agentapi server:", err)
		return 1
	}
	defer os.RemoveAll(uploadDir)

	var ag atomic.Pointer[agent.Agent]
	term, err := agent.StartTerminal(command, agent.TermOptions{
		Width: f.termWidth, Height: f.termHeight,
		OnOutput: func() {
			if a := ag.Load(); a != nil {
				a.Output()
			}
		},
	})
	if err != nil {
		fmt.Fprintln(stderr, "agentapi server:", err)
		return 1
	}
	a := agent.New(term, opts)
	ag.Store(a)
	a.Output() // sample whatever was printed before the agent existed
	defer a.Close()

	saveState := func(why string) {
		if f.stateFile == "" || !f.saveState {
			return
		}
		if err := agent.SaveState(f.stateFile, agent.State{AgentType: string(typ), SavedAt: time.Now(), Messages: a.Messages()}); err != nil {
			log.Error("saving the conversation failed", "state_file", f.stateFile, "error", err)
			return
		}
		log.Info("saved the conversation", "state_file", f.stateFile, "reason", why)
	}

	srv, err := agenthttp.New(agenthttp.Config{
		Agent: a, AgentType: typ, UploadDir: uploadDir, ChatBasePath: f.chatBasePath,
		AllowedHosts: f.allowedHosts, AllowedOrigins: f.allowedOrigins, Version: versionString(), Logger: log,
	})
	if err != nil {
		term.Close(5 * time.Second)
		fmt.Fprintln(stderr, "agentapi server:", err)
		return 2
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(f.port)))
	if err != nil {
		term.Close(5 * time.Second)
		fmt.Fprintln(stderr, "agentapi server: cannot listen (is another server on this port? use --port):", err)
		return 1
	}
	if f.pidFile != "" {
		if err := os.WriteFile(f.pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			term.Close(5 * time.Second)
			fmt.Fprintln(stderr, "agentapi server: writing --pid-file:", err)
			return 1
		}
		defer os.Remove(f.pidFile)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("agentapi server listening", "addr", ln.Addr().String(), "agent_type", typ, "command", strings.Join(command, " "), "pid", term.Pid())

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGUSR1)
	defer signal.Stop(sigs)
	code := 0
loop:
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGUSR1 {
				saveState("SIGUSR1")
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			break loop
		case <-term.Done():
			exitErr := term.ExitErr()
			a.Exited(exitErr)
			if exitErr != nil {
				log.Error("the agent exited", "error", exitErr, "screen", a.ScreenText())
				code = 1
			} else {
				log.Info("the agent exited")
			}
			break loop
		case err := <-errc:
			log.Error("http server stopped", "error", err)
			code = 1
			break loop
		}
	}
	saveState("shutdown")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a.Close() // ends event streams so Shutdown need not wait for them
	hs.Shutdown(ctx)
	term.Close(5 * time.Second)
	return code
}
