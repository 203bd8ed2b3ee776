package deploy

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/agentapi-mt/agentapi/config"
)

const (
	mainFile     = "docker-compose.multitenant.yml"
	upstashFile  = "docker-compose.upstash.yml"
	dockerfile   = "Dockerfile.multitenant"
	envExample   = ".env.example"
	repoRelative = ".."
)

// composeOnly are the variables .env.example documents for the compose
// stack itself rather than for the server.
var composeOnly = []string{
	"REDIS_PORT", "REDIS_MAX_MEMORY", "REDIS_LOG_LEVEL",
	"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB",
}

// readEnvExample returns the NAME=value assignments of .env.example in
// order, failing on any line that is neither a comment, blank, nor NAME=.
func readEnvExample(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRelative, envExample))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			t.Errorf("%s:%d: not NAME=value: %q", envExample, n, line)
			continue
		}
		if _, dup := vars[name]; dup {
			t.Errorf("%s:%d: %s assigned twice", envExample, n, name)
		}
		vars[name] = value
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return vars
}

func TestEnvExampleHasEveryVariable(t *testing.T) {
	vars := readEnvExample(t)
	for _, name := range append(config.Variables(), composeOnly...) {
		if _, ok := vars[name]; !ok {
			t.Errorf("%s lacks %s=", envExample, name)
		}
	}
	// The shipped placeholder is rejected by the server; the example must
	// leave the key empty (generated) rather than carry a published one.
	if v := vars["TOKEN_ENCRYPTION_KEY"]; v != "" {
		t.Errorf("TOKEN_ENCRYPTION_KEY=%q in %s, want empty", v, envExample)
	}
}

// TestEnvExampleIsValid loads .env.example as the server's environment: the
// defaults it ships must pass the server's own validation.
func TestEnvExampleIsValid(t *testing.T) {
	vars := readEnvExample(t)
	if _, err := config.Load(nil, func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}); err != nil {
		t.Errorf("the server rejects %s: %v", envExample, err)
	}
}

// load loads the named compose files (copied to a scratch directory, so a
// developer's own .env cannot leak in) with the given interpolation
// environment and profiles.
func load(t *testing.T, env map[string]string, profiles []string, files ...string) *types.Project {
	t.Helper()
	dir := t.TempDir()
	paths := make([]string, len(files))
	for i, name := range files {
		data, err := os.ReadFile(filepath.Join(repoRelative, name))
		if err != nil {
			t.Fatal(err)
		}
		paths[i] = filepath.Join(dir, name)
		if err := os.WriteFile(paths[i], data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	opts, err := cli.NewProjectOptions(paths,
		cli.WithWorkingDirectory(dir),
		cli.WithEnv(envList),
		cli.WithProfiles(profiles),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("loading %v: %v", files, err)
	}
	return p
}

func serviceNames(p *types.Project) []string {
	names := p.ServiceNames()
	slices.Sort(names)
	return names
}

func dependsOn(t *testing.T, s types.ServiceConfig, want ...string) {
	t.Helper()
	var got []string
	for name, dep := range s.DependsOn {
		got = append(got, name)
		if dep.Condition != types.ServiceConditionHealthy {
			t.Errorf("%s depends on %s with condition %q, want %q", s.Name, name, dep.Condition, types.ServiceConditionHealthy)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s depends on %v, want %v", s.Name, got, want)
	}
}

func env(s types.ServiceConfig, name string) (string, bool) {
	v, ok := s.Environment[name]
	if !ok || v == nil {
		return "", ok
	}
	return *v, true
}

func TestComposeServices(t *testing.T) {
	p := load(t, nil, nil, mainFile)
	if got, want := serviceNames(p), []string{"agentapi", "postgres", "redis"}; !slices.Equal(got, want) {
		t.Errorf("services without a profile: %v, want %v", got, want)
	}
	for _, profile := range []string{"development", "debug"} {
		dev := load(t, nil, []string{profile}, mainFile)
		if got, want := serviceNames(dev), []string{"agentapi", "postgres", "redis", "redis-insights"}; !slices.Equal(got, want) {
			t.Errorf("services with profile %s: %v, want %v", profile, got, want)
		}
		ins, err := dev.GetService("redis-insights")
		if err == nil {
			dependsOn(t, ins, "redis")
			if len(ins.Ports) != 1 || ins.Ports[0].Published != "8001" {
				t.Errorf("redis-insights ports %+v, want 8001 published", ins.Ports)
			}
		}
	}

	for _, name := range []string{"agentapi", "postgres", "redis"} {
		s, err := p.GetService(name)
		if err != nil {
			t.Fatal(err)
		}
		if s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 || s.HealthCheck.Disable {
			t.Errorf("%s has no health check", name)
		}
		if s.Restart == "" {
			t.Errorf("%s has no restart policy", name)
		}
		if s.Deploy == nil || s.Deploy.Resources.Limits == nil || s.Deploy.Resources.Limits.MemoryBytes == 0 {
			t.Errorf("%s has no memory limit", name)
		}
		if _, ok := s.Networks["agentapi"]; !ok {
			t.Errorf("%s is not on the private network", name)
		}
		if len(s.Volumes) == 0 || s.Volumes[0].Type != types.VolumeTypeVolume {
			t.Errorf("%s has no named volume", name)
		}
	}
	if s, _ := p.GetService("postgres"); !strings.Contains(strings.Join(s.HealthCheck.Test, " "), "pg_isready -U") {
		t.Errorf("postgres health check %q does not use pg_isready -U", s.HealthCheck.Test)
	}
}

func TestComposeAgentAPI(t *testing.T) {
	p := load(t, nil, nil, mainFile)
	s, err := p.GetService("agentapi")
	if err != nil {
		t.Fatal(err)
	}
	dependsOn(t, s, "postgres", "redis")
	if s.Build == nil || s.Build.Dockerfile != dockerfile {
		t.Errorf("agentapi build %+v, want dockerfile %s", s.Build, dockerfile)
	}
	if len(s.Ports) != 1 || s.Ports[0].Target != 3284 || s.Ports[0].Published != "3284" {
		t.Errorf("agentapi ports %+v, want 3284:3284", s.Ports)
	}
	if len(s.EnvFiles) != 1 || s.EnvFiles[0].Required || filepath.Base(s.EnvFiles[0].Path) != ".env" {
		t.Errorf("agentapi env_file %+v, want an optional .env", s.EnvFiles)
	}
	for _, name := range config.Variables() {
		if _, ok := s.Environment[name]; !ok {
			t.Errorf("agentapi environment lacks %s", name)
		}
	}
	want := map[string]string{
		"PORT":              "3284",
		"AGENTAPI_DATA_DIR": "/var/lib/agentapi",
		"REDIS_ENABLE":      "true",
		"REDIS_PROTOCOL":    "native",
		"REDIS_URL":         "redis://redis:6379",
		"DATABASE_URL":      "postgres://agentapi:agentapi@postgres:5432/agentapi?sslmode=disable",
		"SESSION_TTL":       "3600s",
	}
	for name, v := range want {
		if got, _ := env(s, name); got != v {
			t.Errorf("agentapi %s=%q, want %q", name, got, v)
		}
	}
	mounted := false
	for _, v := range s.Volumes {
		mounted = mounted || (v.Type == types.VolumeTypeVolume && v.Target == "/var/lib/agentapi")
	}
	if !mounted {
		t.Errorf("agentapi data dir is not on a named volume: %+v", s.Volumes)
	}

	// The environment the server sees by default must be valid.
	if _, err := config.Load(nil, func(name string) (string, bool) { return env(s, name) }); err != nil {
		t.Errorf("the server rejects the compose defaults: %v", err)
	}

	// Operators' values win over the defaults, and reach the DSN.
	custom := load(t, map[string]string{"PORT": "8080", "POSTGRES_PASSWORD": "s3cret", "REDIS_ENABLE": "false"}, nil, mainFile)
	cs, _ := custom.GetService("agentapi")
	if cs.Ports[0].Published != "8080" || cs.Ports[0].Target != 3284 {
		t.Errorf("PORT=8080: ports %+v, want 8080:3284", cs.Ports)
	}
	if v, _ := env(cs, "PORT"); v != "3284" {
		t.Errorf("PORT=8080 changed the container port to %q", v)
	}
	if v, _ := env(cs, "DATABASE_URL"); !strings.Contains(v, ":s3cret@postgres:5432/") {
		t.Errorf("DATABASE_URL %q ignores POSTGRES_PASSWORD", v)
	}
	if v, _ := env(cs, "REDIS_ENABLE"); v != "false" {
		t.Errorf("REDIS_ENABLE=false gave %q", v)
	}
}

// redisScript returns the shell script of the redis service's sh -c command.
func redisScript(t *testing.T, p *types.Project) string {
	t.Helper()
	s, err := p.GetService("redis")
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Command) != 3 || s.Command[0] != "sh" || s.Command[1] != "-c" {
		t.Fatalf("redis command %q, want [sh -c script]", s.Command)
	}
	return strings.Join(strings.Fields(s.Command[2]), " ")
}

func TestComposeRedis(t *testing.T) {
	p := load(t, nil, nil, mainFile)
	s, _ := p.GetService("redis")
	if s.Image != "redis:7-alpine" {
		t.Errorf("redis image %q", s.Image)
	}
	script := redisScript(t, p)
	if !strings.HasPrefix(script, "exec redis-server ") {
		t.Errorf("redis script does not exec redis-server: %q", script)
	}
	for _, flag := range []string{
		"--appendonly yes",
		"--appendfilename appendonly.aof",
		"--save 900 1",
		"--save 300 10",
		"--save 60 10000",
		"--maxmemory 256mb",
		"--maxmemory-policy allkeys-lru",
		"--loglevel notice",
		// Compose turns $$ into $: the shell adds the flag only when the
		// password is non-empty, so an empty password cannot break it.
		`${REDIS_PASSWORD:+--requirepass "$REDIS_PASSWORD"}`,
	} {
		if !strings.Contains(script, flag) {
			t.Errorf("redis command lacks %q: %q", flag, script)
		}
	}
	if v, ok := env(s, "REDIS_PASSWORD"); !ok || v != "" {
		t.Errorf("redis REDIS_PASSWORD=%q (set %v), want present and empty by default", v, ok)
	}
	hc := strings.Join(s.HealthCheck.Test, " ")
	for _, part := range []string{"CMD-SHELL", `${REDIS_PASSWORD:+-a "$REDIS_PASSWORD"}`, "ping", "PONG"} {
		if !strings.Contains(hc, part) {
			t.Errorf("redis health check lacks %q: %q", part, hc)
		}
	}

	tuned := load(t, map[string]string{"REDIS_MAX_MEMORY": "512mb", "REDIS_LOG_LEVEL": "warning", "REDIS_PASSWORD": "pw"}, nil, mainFile)
	script = redisScript(t, tuned)
	for _, flag := range []string{"--maxmemory 512mb", "--loglevel warning"} {
		if !strings.Contains(script, flag) {
			t.Errorf("with overrides, redis command lacks %q: %q", flag, script)
		}
	}
	ts, _ := tuned.GetService("redis")
	ta, _ := tuned.GetService("agentapi")
	pw1, _ := env(ts, "REDIS_PASSWORD")
	pw2, _ := env(ta, "REDIS_PASSWORD")
	if pw1 != "pw" || pw2 != "pw" {
		t.Errorf("REDIS_PASSWORD reaches redis as %q and agentapi as %q, want pw for both", pw1, pw2)
	}
}

func TestComposeUpstashOverride(t *testing.T) {
	upstash := map[string]string{
		"REDIS_PROTOCOL":           "rest",
		"UPSTASH_REDIS_REST_URL":   "https://example.upstash.io",
		"UPSTASH_REDIS_REST_TOKEN": "token",
		"UPSTASH_REDIS_URL":        "rediss://default:pw@example.upstash.io:6379",
	}
	// An .env copied from .env.example also sets REDIS_URL to the local
	// container; the override must not let it through.
	withLocalURL := map[string]string{"REDIS_URL": "redis://redis:6379"}
	for k, v := range upstash {
		withLocalURL[k] = v
	}
	p := load(t, withLocalURL, nil, mainFile, upstashFile)
	if got, want := serviceNames(p), []string{"agentapi", "postgres"}; !slices.Equal(got, want) {
		t.Errorf("services with the Upstash override: %v, want %v", got, want)
	}
	s, err := p.GetService("agentapi")
	if err != nil {
		t.Fatal(err)
	}
	dependsOn(t, s, "postgres")
	for name, v := range upstash {
		if got, _ := env(s, name); got != v {
			t.Errorf("agentapi %s=%q, want %q", name, got, v)
		}
	}
	if v, _ := env(s, "REDIS_URL"); v != "" {
		t.Errorf("with Upstash REDIS_URL=%q, want empty (unset)", v)
	}
	for _, name := range config.Variables() {
		if _, ok := s.Environment[name]; !ok {
			t.Errorf("agentapi environment lacks %s with the override", name)
		}
	}
	if _, err := config.Load(nil, func(name string) (string, bool) { return env(s, name) }); err != nil {
		t.Errorf("the server rejects the Upstash settings: %v", err)
	}

	// The local Redis can still be brought up on purpose.
	local := load(t, upstash, []string{"local-redis"}, mainFile, upstashFile)
	if !slices.Contains(local.ServiceNames(), "redis") {
		t.Errorf("profile local-redis does not enable redis: %v", local.ServiceNames())
	}
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRelative, dockerfile))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, want := range []string{
		"FROM golang:${GO_VERSION}-bookworm AS build",
		"ARG GO_VERSION=1.26",
		"CGO_ENABLED=0 go build -trimpath",
		"-X main.version=",
		"./cmd/agentapi",
		"EXPOSE 3284",
		"ENV AGENTAPI_DATA_DIR=/var/lib/agentapi",
		"HEALTHCHECK",
		"http://127.0.0.1:3284/status",
		`ENTRYPOINT ["agentapi"]`,
		`CMD ["serve"]`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("%s lacks %q", dockerfile, want)
		}
	}
	// The last USER must not be root.
	var user string
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "USER" {
			user = f[1]
		}
	}
	if user == "" || strings.HasPrefix(user, "root") || strings.HasPrefix(user, "0") {
		t.Errorf("%s runs as %q, want a non-root user", dockerfile, user)
	}
}
