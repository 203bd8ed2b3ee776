package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

var binary string

var interruptSignal = syscall.SIGINT

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "agentapi-bin-*")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "agentapi")
	out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// started runs the binary and returns once it logs its listening address.
func started(t *testing.T, env []string, args ...string) (*exec.Cmd, string, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = env
	cmd.Dir = t.TempDir()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	logs := &strings.Builder{}
	addrc := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`"addr":"\[::\]:(\d+)"`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			logs.WriteString(line + "\n")
			if m := re.FindStringSubmatch(line); m != nil && strings.Contains(line, "listening") {
				addrc <- "127.0.0.1:" + m[1]
			}
		}
		close(addrc)
	}()
	select {
	case addr, ok := <-addrc:
		if !ok {
			cmd.Wait()
			t.Fatalf("server exited before listening:\n%s", logs.String())
		}
		return cmd, addr, logs
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not listen within 30s:\n%s", logs.String())
	}
	return nil, "", nil
}

func getJSON(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("%s: %v: %s", url, err, body)
	}
	return resp.StatusCode, m
}

func TestServeWithNoEnvironmentStartsAnswersAndStopsCleanly(t *testing.T) {
	home := t.TempDir()
	// No environment at all, except HOME so the generated key lands in a
	// temporary data directory instead of the real one.
	cmd, addr, logs := started(t, []string{"HOME=" + home}, "serve", "--port", "0")

	code, body := getJSON(t, "http://"+addr+"/status")
	if code != http.StatusOK || body["status"] != "ok" {
		t.Fatalf("/status = %d %v", code, body)
	}
	redis := body["checks"].(map[string]any)["redis"].(map[string]any)
	if redis["status"] != "disabled" {
		t.Fatalf("redis check = %v, want disabled without REDIS_ENABLE", redis)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := getJSON(t, "http://"+addr+p); code != http.StatusOK {
			t.Fatalf("%s = %d", p, code)
		}
	}
	if _, err := os.Stat(filepath.Join(home, ".local/share/agentapi/token_encryption_key")); err != nil {
		t.Fatalf("generated key not kept in the data directory: %v", err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop within 30s of SIGTERM")
	}
	if !strings.Contains(logs.String(), "stopped cleanly") {
		t.Fatalf("no clean-stop log:\n%s", logs.String())
	}
}

func TestServeReportsRedisDownAsDegradedNotFailed(t *testing.T) {
	// A port nothing listens on: Redis is enabled but unreachable.
	env := []string{"HOME=" + t.TempDir(), "REDIS_ENABLE=true", "REDIS_URL=redis://127.0.0.1:1", "REDIS_CONNECTION_TIMEOUT=1s"}
	_, addr, _ := started(t, env, "serve", "--port", "0")
	code, body := getJSON(t, "http://"+addr+"/status")
	if code != http.StatusOK || body["status"] != "degraded" {
		t.Fatalf("/status = %d %v, want 200 degraded", code, body)
	}
	redis := body["checks"].(map[string]any)["redis"].(map[string]any)
	detail := redis["detail"].(map[string]any)
	if redis["status"] != "down" || detail["last_error"] == "" || detail["enabled"] != true {
		t.Fatalf("redis check = %v", redis)
	}
}

func TestConfigCommand(t *testing.T) {
	run := func(env ...string) (string, int) {
		cmd := exec.Command(binary, "config")
		cmd.Env = append([]string{"HOME=" + t.TempDir()}, env...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	out, code := run("REDIS_ENABLE=true", "REDIS_PASSWORD=hunter2", "UPSTASH_REDIS_REST_URL=https://x.upstash.io", "UPSTASH_REDIS_REST_TOKEN=tok-secret")
	if code != 0 {
		t.Fatalf("config exit %d:\n%s", code, out)
	}
	for _, secret := range []string{"hunter2", "tok-secret"} {
		if strings.Contains(out, secret) {
			t.Fatalf("config printed secret %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "1. native (preferred)") || !strings.Contains(out, "2. rest (fallback) https://x.upstash.io") {
		t.Fatalf("config does not show the Redis paths:\n%s", out)
	}

	out, code = run("REDIS_PROTOCOL=carrier-pigeon", "SESSION_TTL=0", "REDIS_MAX_POOL_SIZE=-3")
	if code == 0 {
		t.Fatalf("bad configuration exited 0:\n%s", out)
	}
	for _, name := range []string{"REDIS_PROTOCOL", "SESSION_TTL", "REDIS_MAX_POOL_SIZE", "3 problems"} {
		if !strings.Contains(out, name) {
			t.Errorf("output does not mention %s:\n%s", name, out)
		}
	}
}

func TestServeRefusesBadConfiguration(t *testing.T) {
	cmd := exec.Command(binary, "serve")
	cmd.Env = []string{"HOME=" + t.TempDir(), "TOKEN_ENCRYPTION_KEY=change-this-to-a-random-32-byte-key"}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "TOKEN_ENCRYPTION_KEY") {
		t.Fatalf("serve with the placeholder key: err %v\n%s", err, out)
	}
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(binary, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "agentapi ") {
		t.Fatalf("version: %v %q", err, out)
	}
}
