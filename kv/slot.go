package kv

import (
	"errors"
	"fmt"
	"strings"

	"github.com/agentapi-mt/agentapi"
)

// Slots is the number of Redis Cluster hash slots.
const Slots = 16384

// Slot returns the Redis Cluster hash slot of key: CRC16 (XMODEM) modulo
// 16384 of its hash tag, the text between the first '{' and the first '}'
// after it when that text is not empty, or else of the whole key. Keys with
// the same hash tag are in the same slot, which is what lets one script or
// transaction use them together on a cluster.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % Slots)
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), the
// checksum Redis Cluster hashes keys with.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// ErrCrossSlot: one call named keys in different Redis Cluster hash slots
// where one slot is required (see Client). It is of kind KindInvalid: the
// caller's keys are wrong, not the server's state, and nothing was sent.
var ErrCrossSlot = agentapi.E("kv", agentapi.KindInvalid, errors.New("keys in different Redis Cluster hash slots"))

// CrossSlot reports that the keys a and b of one call are in different
// hash slots; the error matches ErrCrossSlot.
func CrossSlot(op, what, a, b string) error {
	return &wrapped{op: op, sentinel: ErrCrossSlot, cause: fmt.Errorf("%s: key %q (slot %d) and key %q (slot %d); give them one hash tag, {...}", what, a, Slot(a), b, Slot(b))}
}

// IsCrossSlot reports whether err says that a call's keys were in
// different hash slots: ErrCrossSlot from a transport that checked before
// sending, or Redis's own CROSSSLOT reply for a command whose keys the
// transport could not locate.
func IsCrossSlot(err error) bool {
	if errors.Is(err, ErrCrossSlot) {
		return true
	}
	var se *ServerError
	return errors.As(err, &se) && se.Prefix() == "CROSSSLOT"
}
