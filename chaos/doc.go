// Package chaos holds the chaos and soak suite (its tests; no library
// code). TestChaos runs three `agentapi serve` processes on one Redis (with
// an append-only file, as the Compose deployment has) and one PostgreSQL,
// all started by the test, and drives mixed load at them -- logins,
// session starts and stops, messages to echo agents, cached reads,
// cross-tenant probes and rate-limited bursts -- from several tenants,
// through a client that, like a load balancer without sticky sessions,
// sends each request to any live instance. Meanwhile it kills Redis
// (SIGKILL) and restarts it, SIGKILLs an instance and restarts it, and
// restarts PostgreSQL (immediate shutdown), one fault at a time with a
// steady spell between them.
//
// It then reports the requests served, the answers by kind and operation,
// and the latency percentiles, and fails when:
//   - an acknowledged message is missing from its session's stored
//     transcript, or an agent reply a client read is;
//   - a login token the server issued stops working;
//   - a usage count is below what the clients were answered (a lost
//     count) or above what they sent (an invented one);
//   - a tenant ever saw another tenant's sessions or transcripts;
//   - an answer was a 500, a 401 or 403 to valid credentials, or
//     anything else no fault explains;
//   - a burst got more than its limit while the system was whole;
//   - the service is not whole again after the last fault.
//
// The short form (the default, about a minute and a half) runs each fault
// once and is part of `go test ./...`. The long form repeats the cycle for
// a given time:
//
//	go test ./chaos -run TestChaos -timeout 60m -v -args -chaos.duration=10m -chaos.report=chaos-report.json
package chaos
