package fraud

import (
	"context"
	"time"
)

// decideWait bounds how long a decision waits for the monitor's lock,
// which is held while the monitor responds to an incident (AMI round
// trips): past it the Decider answers from its last view.
const decideWait = time.Millisecond

// DecideView implements DecideState: whether the engine contained ext and
// the address ext last authenticated from (the tracker's, from AMI
// SuccessfulAuth and the log's auth_success).
func (m *Monitor) DecideView(ext string) (StateView, bool) {
	if !m.mu.TryLock() {
		deadline := time.Now().Add(decideWait)
		for !m.mu.TryLock() {
			if time.Now().After(deadline) {
				return StateView{}, false
			}
			time.Sleep(20 * time.Microsecond)
		}
	}
	defer m.mu.Unlock()
	v := StateView{Contained: m.Engine.Contained(ext)}
	v.Addr, _ = m.Tracker.EndpointAddr(ext)
	return v, true
}

// ContainDecision carries out the finding of a denial (Decision.Finding)
// as if the engine had made it: the extension is marked contained (the
// engine, and so the Decider, then refuses its calls until unlock), and
// the responses run (hang-up of its live calls, lock, ban of the denied
// call's address, alert, incident). A rule that already fired for the
// extension within the window does nothing again. Call it off the AGI
// path: it waits for the monitor and for AMI.
func (m *Monitor) ContainDecision(ctx context.Context, f Finding) []*Incident {
	m.mu.Lock()
	e := m.Engine
	if f.Extension == "" || e.ignore[f.Extension] {
		m.mu.Unlock()
		return nil
	}
	s := e.state(f.Extension, f.Time)
	if s == nil || !e.cooldown(s, f.Rule, f.Time) {
		m.mu.Unlock()
		return nil
	}
	if f.Score > s.score {
		s.score = f.Score
	}
	res := e.nums.Normalize(f.Dialled)
	best, _ := res.BestCandidate()
	b := batch{now: f.Time, fs: e.decorate([]Finding{f}, s, best, f.Time)}
	b.lives = m.lives(b.fs)
	m.mu.Unlock()
	// The responses run here, not queued: the caller (the AGI server's
	// containment loop, off every answer's path) learns what really
	// happened, and the lock is in the AstDB before the decider relies
	// on it (StillLocked reads it back).
	return m.process(ctx, b)
}

// StillLocked asks Asterisk whether ext's AstDB lock is still there (the
// monitor's LockCheck); when an administrator removed it ("pbxguard
// incident unlock", another process) after pbxguard's lock response ran,
// the engine releases ext and false is returned. Without a LockCheck it reports the engine's state.
func (m *Monitor) StillLocked(ctx context.Context, ext string) bool {
	m.mu.Lock()
	check := m.LockCheck
	contained := m.Engine.Contained(ext)
	pending := m.Engine.LockPending(ext)
	m.mu.Unlock()
	if !contained || check == nil || m.Responder != nil && m.Responder.DryRun {
		return contained
	}
	if pending {
		// pbxguard's own lock is still on its way: an absent key is no
		// unlock by hand.
		return true
	}
	locked, err := check(ctx, ext)
	if err != nil || locked {
		return true
	}
	m.mu.Lock()
	m.Engine.Release(ext)
	m.mu.Unlock()
	return false
}
