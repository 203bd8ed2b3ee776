package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of utime and stime in /proc/<pid>/stat (USER_HZ, 100
// on every Linux architecture Go supports).
const userHZ = 100

// selfCPU is this process's CPU time so far (user + system), from
// getrusage(RUSAGE_SELF).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the CPU time (user + system, all threads) of a live process,
// from /proc/<pid>/stat. Its resolution is 1/USER_HZ = 10 ms.
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return time.Duration(ut+st) * time.Second / userHZ, nil
}

// procField returns a "Name:   N kB" field of a /proc file in bytes.
func procField(path, name string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name+":")
		if !ok {
			continue
		}
		fs := strings.Fields(rest)
		if len(fs) == 0 {
			break
		}
		n, err := strconv.ParseUint(fs[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %s: %v", path, name, err)
		}
		if len(fs) > 1 && fs[1] == "kB" {
			n *= 1024
		}
		return n, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no %s", path, name)
}

// procRSS is a process's resident set size (VmRSS) in bytes; pid 0 means
// this process.
func procRSS(pid int) (uint64, error) {
	if pid == 0 {
		return procField("/proc/self/status", "VmRSS")
	}
	return procField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS")
}

// procPSS is a process's proportional set size in bytes: its RSS with each
// shared page (the agentapi binary's text, shared libraries) divided among
// the processes mapping it.
func procPSS(pid int) (uint64, error) {
	return procField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss")
}

// machineBusy is the CPU time all CPUs spent outside idle and iowait (user,
// nice, system, irq, softirq: the kernel's pty work included), from the
// first line of /proc/stat.
func machineBusy() (time.Duration, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, fmt.Errorf("/proc/stat: empty")
	}
	fs := strings.Fields(sc.Text())
	if len(fs) < 8 || fs[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", sc.Text())
	}
	var busy uint64
	for _, i := range []int{1, 2, 3, 6, 7} { // user nice system irq softirq
		n, err := strconv.ParseUint(fs[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %v", err)
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / userHZ, nil
}
