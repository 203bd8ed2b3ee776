package main

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"
)

// pct formats a number of cores as a percentage of one core.
func pct(cores float64) string {
	p := cores * 100
	switch a := math.Abs(p); {
	case a >= 10:
		return fmt.Sprintf("%.0f%%", p)
	case a >= 1:
		return fmt.Sprintf("%.1f%%", p)
	case a >= 0.1:
		return fmt.Sprintf("%.2f%%", p)
	default:
		return fmt.Sprintf("%.3f%%", p)
	}
}

func mib(b float64) string {
	switch a := math.Abs(b); {
	case a >= 100<<20:
		return fmt.Sprintf("%.0f MiB", b/(1<<20))
	case a >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	default:
		return fmt.Sprintf("%.0f KiB", b/(1<<10))
	}
}

func ms(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= 100*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	}
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func count(n float64) string {
	if n >= 100 {
		return fmt.Sprintf("%.0f", n)
	}
	return fmt.Sprintf("%.1f", n)
}

// memTotal is the machine's RAM in bytes, or 0.
func memTotal() float64 {
	n, err := procField("/proc/meminfo", "MemTotal")
	if err != nil {
		return 0
	}
	return float64(n)
}

// saturated reports whether the machine's CPUs were (nearly) all busy
// during w.
func saturated(w window) bool { return w.machineCores() >= 0.9*float64(runtime.NumCPU()) }

// machine formats the machine's busy CPU during w, and the part of it
// neither agentbench nor the demo agents used.
func machine(w window) string {
	other := max(w.machineCores()-w.selfCores()-w.agentCores(), 0)
	return fmt.Sprintf("%s (others %s)", pct(w.machineCores()), pct(other))
}

// framesDropped reports whether the sessions of a rendered clearly fewer
// screens than the 12.5 a second the demo agent's spinner asks for: the
// machine could not keep up.
func framesDropped(a activeResult) bool {
	return a.w.rate(a.w.renders)/float64(a.k) < 11
}

func (r *sessionResult) print(cfg config) {
	n := float64(r.n)
	fmt.Printf("## Agent sessions: %d demo agents, 80x1000 terminals, type echo\n\n", r.n)
	fmt.Printf("All %d sessions were stable and showing their prompt %s after the first one started.\n\n", r.n, secs(r.startup))

	fmt.Printf("### CPU, in %% of one core\n\n")
	fmt.Printf("\"agentbench\" is the server's side of the sessions (pty reading, vt10x emulation, screen sampling, status and reply tracking), measured with getrusage on this process. \"demo agents\" are the `agentapi demo-agent` processes (utime+stime from /proc/<pid>/stat, charged in 10 ms ticks per process). \"machine\" is all CPUs' busy time from /proc/stat (kernel pty work included), and in parentheses what other processes used of it: load that was not ours. Per session means per session in the state named: idle sessions for the idle row, active ones for the active rows.\n\n")
	fmt.Printf("| case | window | agentbench total | agentbench per session | demo agents total | demo agents per session | machine total | screens rendered/s | output chunks/s |\n")
	fmt.Printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	fmt.Printf("| no session (baseline) | %s | %s | – | – | – | %s | – | – |\n", secs(r.baseline.wall), pct(r.baseline.selfCores()), machine(r.baseline))
	row := func(name string, w window, k int) {
		if saturated(w) {
			name += " (CPUs saturated)"
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", name, secs(w.wall),
			pct(w.selfCores()), pct(w.selfCores()/float64(k)), pct(w.agentCores()), pct(w.agentCores()/float64(k)),
			machine(w), count(w.rate(w.renders)), count(w.rate(w.outputs)))
	}
	row(fmt.Sprintf("%d idle (stable, prompt shown)", r.n), r.idle, r.n)
	for _, a := range r.actives {
		row(fmt.Sprintf("%d of %d active (spinner redrawn every 80 ms)", a.k, r.n), a.w, a.k)
	}
	fmt.Println()

	fmt.Printf("- Idle: %d of %d sessions still stable at the end of the window; %.0f screens rendered and %.0f output chunks read in it.\n", r.idleStable, r.n, float64(r.idle.renders), float64(r.idle.outputs))
	for _, a := range r.actives {
		perSession := a.w.rate(a.w.renders) / float64(a.k)
		perRender := time.Duration(0)
		if a.w.renders > 0 {
			perRender = time.Duration(float64(a.w.self) / float64(a.w.renders))
		}
		fmt.Printf("- %d active: the sends returned after %s (%d failed); %d of %d still showed the spinner at the end of the window; %d of %d replies were recorded afterwards. %.1f screens rendered per active session per second (the demo agent redraws its whole screen 12.5 times a second while thinking); agentbench CPU per rendered screen, emulation and reply tracking included: %s.",
			a.k, ms(a.sendTime), len(a.sendErrs), a.spinning, a.k, a.replied, a.k, perSession, ms(perRender))
		if framesDropped(a) {
			fmt.Printf(" Fewer than 12.5/s: the demo agents' redraws were delayed or dropped, so the per-session CPU of this row understates what an unhindered active session costs.")
		}
		fmt.Println()
		for i, e := range a.sendErrs {
			if i == 3 {
				fmt.Printf("  - … and %d more send errors\n", len(a.sendErrs)-3)
				break
			}
			fmt.Printf("  - send error: %s\n", e)
		}
	}
	others := func(w window) float64 { return max(w.machineCores()-w.selfCores()-w.agentCores(), 0) }
	worst := max(others(r.baseline), others(r.idle))
	for _, a := range r.actives {
		worst = max(worst, others(a.w))
	}
	if worst > 0.2 {
		fmt.Printf("- Other processes used up to %s of a core during these windows (see \"others\"). This process's and the demo agents' CPU time is their own, but under contention active sessions get fewer redraws rendered and each can cost more.\n", pct(worst))
	}
	errs := r.idle.agentErrs + r.memN.agentErrs
	for _, a := range r.actives {
		errs += a.w.agentErrs
	}
	if errs > 0 || r.exited > 0 {
		fmt.Printf("- Warning: %d demo agents exited early; %d /proc reads failed.\n", r.exited, errs)
	}
	fmt.Println()

	fmt.Printf("### Memory\n\n")
	fmt.Printf("Go heap in use and RSS of agentbench after a forced GC (debug.FreeOSMemory), with no session and with %d idle sessions; RSS and PSS (shared pages such as the binary's text split among the processes mapping them) of the demo agents.\n\n", r.n)
	fmt.Printf("| | no session | %d sessions | per session |\n|---|---:|---:|---:|\n", r.n)
	heapPer := (float64(r.memN.heap) - float64(r.mem0.heap)) / n
	rssPer := (float64(r.memN.rss) - float64(r.mem0.rss)) / n
	agentRSS, agentPSS := float64(r.memN.agentsRSS)/n, float64(r.memN.agentsPSS)/n
	fmt.Printf("| agentbench Go heap in use | %s | %s | %s |\n", mib(float64(r.mem0.heap)), mib(float64(r.memN.heap)), mib(heapPer))
	fmt.Printf("| agentbench RSS | %s | %s | %s |\n", mib(float64(r.mem0.rss)), mib(float64(r.memN.rss)), mib(rssPer))
	fmt.Printf("| demo agents RSS (sum) | – | %s | %s |\n", mib(float64(r.memN.agentsRSS)), mib(agentRSS))
	fmt.Printf("| demo agents PSS (sum) | – | %s | %s |\n\n", mib(float64(r.memN.agentsPSS)), mib(agentPSS))

	fmt.Printf("### Per session\n\n")
	fmt.Printf("| per session | our server (agentbench) | the demo agent process | both |\n|---|---:|---:|---:|\n")
	idleSelf, idleAgent := r.idle.selfCores()/n, r.idle.agentCores()/n
	fmt.Printf("| CPU, idle (%% of a core) | %s | %s | %s |\n", pct(idleSelf), pct(idleAgent), pct(idleSelf+idleAgent))
	var activePer float64 // CPU of one active session, from the first round that did not saturate the CPUs
	for _, a := range r.actives {
		k := float64(a.k)
		self, ag := a.w.selfCores()/k, a.w.agentCores()/k
		note := ""
		switch {
		case framesDropped(a):
			note = ", redraws dropped: a lower bound"
		case activePer == 0:
			activePer = self + ag
		}
		fmt.Printf("| CPU, active (%% of a core; %d of %d active%s) | %s | %s | %s |\n", a.k, r.n, note, pct(self), pct(ag), pct(self+ag))
	}
	fmt.Printf("| memory | %s heap, %s RSS | %s RSS, %s PSS | %s (RSS + PSS) |\n\n", mib(heapPer), mib(rssPer), mib(agentRSS), mib(agentPSS), mib(rssPer+agentPSS))

	idle100 := 100 * (idleSelf + idleAgent)
	verdict := "met"
	if idle100 >= 1 {
		verdict = "NOT met"
	}
	fmt.Printf("Target \"100 idle demo-agent sessions under 1 CPU core\": **%s**. %d idle sessions used %s of one core in all: agentbench %s (its no-session baseline was %s), the demo agents %s. That is %s of a core per 100 idle sessions, including agentbench's own background.\n\n",
		verdict, r.n, pct(r.idle.selfCores()+r.idle.agentCores()), pct(r.idle.selfCores()), pct(r.baseline.selfCores()), pct(r.idle.agentCores()), pct(idle100))
	cores := float64(runtime.NumCPU())
	if activePer > 0 {
		fmt.Printf("An active session (spinner running) costs %s of a core (server and demo agent), so this %d-CPU machine holds about %.0f simultaneously active sessions before its CPUs saturate.", pct(activePer), runtime.NumCPU(), cores/activePer)
	} else if len(r.actives) > 0 {
		fmt.Printf("In every active round the machine could not keep up with the redraws, so the active per-session figures are lower bounds; rerun with a smaller -active-subset.")
	}
	if mt, per := memTotal(), rssPer+agentPSS; mt > 0 && per > 0 {
		fmt.Printf(" Idle sessions are bounded by memory: %s each (server RSS + demo agent PSS), about %.0f per GiB of RAM.", mib(per), float64(1<<30)/per)
	}
	fmt.Printf("\n\n")
}

// percentile is the nearest-rank p-th percentile (0 < p <= 1) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(i, 0)]
}

func (r *latencyResult) print(cfg config) {
	fmt.Printf("## Latency: POST /message to the reply in GET /messages\n\n")
	fmt.Printf("`agentapi server --type echo --port 0 --settle-window %s -- agentapi demo-agent --think 0s`, %d rounds (%d succeeded), each started once GET /status said stable. Times from the start of `POST /message {\"content\":\"ping N\",\"type\":\"user\"}`; GET /messages and GET /status polled every 5 ms. The server was stable %s after it started.\n\n",
		cfg.settle, cfg.rounds, len(r.post), secs(r.startup))
	if len(r.post) > 0 {
		fmt.Printf("| from POST /message to | p50 | p90 | max |\n|---|---:|---:|---:|\n")
		line := func(name string, ds []time.Duration) {
			fmt.Printf("| %s | %s | %s | %s |\n", name, ms(percentile(ds, .5)), ms(percentile(ds, .9)), ms(slices.Max(ds)))
		}
		line("POST returned (the agent's screen reacted)", r.post)
		line("reply \"Echo: ping N\" in GET /messages", r.reply)
		line("GET /status stable again", r.stable)
		fmt.Println()
		over := make([]time.Duration, len(r.stable))
		for i, d := range r.stable {
			over[i] = d - cfg.settle
		}
		fmt.Printf("The return to stable is dominated by the %s settle window (the screen must stay unchanged that long): beyond it, p50 %s, max %s.\n\n",
			cfg.settle, ms(percentile(over, .5)), ms(slices.Max(over)))
	}
	if len(r.failed) > 0 {
		fmt.Printf("Failed rounds:\n\n- %s\n\n", strings.Join(r.failed, "\n- "))
	}
}
