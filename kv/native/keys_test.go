package native

import (
	"slices"
	"strings"
	"testing"
)

func TestCommandKeys(t *testing.T) {
	cases := []struct {
		cmd  string
		want []int
	}{
		{"GET k", []int{1}},
		{"get k", []int{1}},
		{"SET k v PX 100", []int{1}},
		{"HSET h f v f2 v2", []int{1}},
		{"DEL a b c", []int{1, 2, 3}},
		{"MGET a", []int{1}},
		{"MSET a 1 b 2", []int{1, 3}},
		{"MSET a 1 b", []int{1, 3}},
		{"RENAME a b", []int{1, 2}},
		{"BLPOP a b 0", []int{1, 2}},
		{"BITOP AND dest a b", []int{2, 3, 4}},
		{"EVALSHA 0123 2 k1 k2 a1 a2", []int{3, 4}},
		{"EVAL src 0 a1", nil},
		{"EVAL src 3 k1", []int{3}}, // numkeys beyond the arguments: the server complains
		{"EVAL src x k1", nil},
		{"FCALL f 1 k a", []int{3}},
		{"ZUNIONSTORE d 2 a b WEIGHTS 1 2", []int{1, 3, 4}},
		{"ZUNION 2 a b", []int{2, 3}},
		{"LMPOP 2 a b LEFT", []int{2, 3}},
		{"BLMPOP 0 1 a LEFT", []int{3}},
		{"XREAD COUNT 2 STREAMS s1 s2 0 0", []int{4, 5}},
		{"XREADGROUP GROUP g c STREAMS s >", []int{5}},
		{"OBJECT ENCODING k", []int{2}},
		{"OBJECT HELP", nil},
		{"MEMORY USAGE k", []int{2}},
		{"MEMORY STATS", nil},
		{"PING", nil},
		{"INFO server", nil},
		{"SCRIPT LOAD src", nil},
		{"NOSUCHCOMMAND a", nil},
		{"GET", nil},
	}
	for _, c := range cases {
		args := strings.Fields(c.cmd)
		if got := commandKeys(args); !slices.Equal(got, c.want) {
			t.Errorf("commandKeys(%q) = %v, want %v", c.cmd, got, c.want)
		}
	}
}
