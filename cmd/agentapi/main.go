// Command agentapi runs terminal coding agents behind an HTTP API.
//
//	agentapi server [flags] -- <agent command>   one agent, upstream-compatible API
//	agentapi serve  [flags]                      multi-tenant control plane
//	agentapi config [flags]                      print the effective configuration
//	agentapi version                             print the version
//
// main only parses the subcommand and wires packages together by hand; every
// decision lives in the packages it wires.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/agentapi-mt/agentapi/agent/demo"
	"github.com/agentapi-mt/agentapi/attach"
	"github.com/agentapi-mt/agentapi/auth"
	"github.com/agentapi-mt/agentapi/config"
	"github.com/agentapi-mt/agentapi/kv/connect"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

const usageText = `agentapi — drive terminal coding agents over HTTP, for one user or many tenants.

Usage:
  agentapi server [flags] -- <agent command ...>   run one agent (upstream AgentAPI compatible;
                                                   --type echo runs the built-in demo agent;
                                                   "agentapi server --help" lists its flags)
  agentapi attach --url host:port                  watch and type into a running agent (Ctrl-] detaches)
  agentapi serve  [flags]                          run the multi-tenant control plane
  agentapi config [flags]                          print the effective configuration (secrets redacted)
  agentapi doctor [flags] [--json]                 check the configuration, Redis, the database and the data directory
  agentapi keygen                                  print a new admin API key and TOKEN_ENCRYPTION_KEY
  agentapi version                                 print the version

Flags of serve and config (each overrides its environment variable):
  --port N            PORT (default 3284; 0 picks a free port)
  --data-dir DIR      AGENTAPI_DATA_DIR (default $XDG_DATA_HOME/agentapi or ~/.local/share/agentapi)
  --database-url URL  DATABASE_URL (PostgreSQL; default: SQLite in the data directory)
  --log-level LEVEL   LOG_LEVEL: debug, info, warn, error (default info)
  --log-format FMT    LOG_FORMAT: json, text, auto (default auto: text on a terminal, else json)

Every environment variable is described in docs/configuration.md.
`

func run(args []string, env config.Env, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], env, stderr)
	case "config":
		return printConfig(args[1:], env, stdout, stderr)
	case "doctor":
		return runDoctor(args[1:], env, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "agentapi", versionString())
		return 0
	case "server":
		return runServer(args[1:], env, os.Stdin, stdout, stderr)
	case "keygen":
		// A new API key (for AGENTAPI_ADMIN_API_KEY) and a new
		// TOKEN_ENCRYPTION_KEY, for operators who set them up front.
		secret, _, _ := auth.NewAPIKey()
		key := make([]byte, 32)
		rand.Read(key)
		fmt.Fprintf(stdout, "AGENTAPI_ADMIN_API_KEY=%s\nTOKEN_ENCRYPTION_KEY=%s\n", secret, hex.EncodeToString(key))
		return 0
	case "attach":
		return runAttach(args[1:], stderr)
	case "demo-agent":
		// Hidden: the built-in demo agent, run by `server --type echo`.
		return demo.Main(args[1:], os.Stdin, os.Stdout)
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usageText)
		return 0
	}
	fmt.Fprintf(stderr, "agentapi: unknown command %q\n\n%s", args[0], usageText)
	return 2
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func loadConfig(args []string, env config.Env, stderr io.Writer) (*config.Config, bool) {
	cfg, err := config.Load(args, env)
	if err != nil {
		fmt.Fprintln(stderr, "agentapi:", err)
		return nil, false
	}
	return cfg, true
}

func printConfig(args []string, env config.Env, stdout, stderr io.Writer) int {
	cfg, ok := loadConfig(args, env, stderr)
	if !ok {
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, kv := range cfg.Effective() {
		fmt.Fprintf(tw, "%s\t%s\n", kv[0], kv[1])
	}
	tw.Flush()
	if cfg.Redis.Enable {
		fmt.Fprint(stdout, "\nRedis paths, in order of preference:\n")
		for i, e := range connect.Endpoints(cfg.Redis) {
			role := "preferred"
			if i > 0 {
				role = "fallback"
			}
			fmt.Fprintf(stdout, "  %d. %s (%s) %s\n", i+1, e.Name, role, e.Addr)
		}
	} else {
		fmt.Fprint(stdout, "\nRedis is disabled (REDIS_ENABLE is not true): features use in-memory state.\n")
	}
	return 0
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	format := cfg.LogFormat
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
func runAttach(args []string, stderr io.Writer) int {
	fs := pflag.NewFlagSet("agentapi attach", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	u := fs.StringP("url", "u", "localhost:3284", "address of the agentapi server")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := attach.Run(ctx, attach.Options{URL: *u, In: os.Stdin, Out: os.Stdout}); err != nil {
		fmt.Fprintln(stderr, "agentapi attach:", err)
		return 1
	}
	return 0
}
