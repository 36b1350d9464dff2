package jail

import (
	"testing"
)

// bantime: permanent makes every ban permanent (Duration Permanent, which
// the daemon turns into a kernel entry without timeout); maxbantime:
// permanent lets increments grow until they reach it, never wrapping.
func TestPermanentBanTime(t *testing.T) {
	run(t, Config{MaxRetry: 2, BanTime: Permanent, MaxBanTime: Permanent}, nil, nil, []step{
		{at: 0, addr: a, kind: fail}, {at: sec, addr: a, kind: fail, want: a + "/32", dur: Permanent, count: 1},
	})
	for _, tc := range []struct {
		prior int
		want  int64
	}{{0, int64(hour)}, {1, 100 * int64(hour)}, {9, int64(Permanent)}, {200, int64(Permanent)}} {
		j := &Jail{cfg: Config{BanTime: hour, MaxBanTime: Permanent, Increment: 100}}
		if got := j.banDuration(tc.prior); int64(got) != tc.want {
			t.Fatalf("banDuration(%d) with increment 100 and maxbantime permanent = %v, want %v", tc.prior, got, tc.want)
		}
	}
}
