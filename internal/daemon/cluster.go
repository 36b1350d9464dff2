package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/pbxguard/pbxguard/internal/cluster"
	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/firewall"
	"github.com/pbxguard/pbxguard/internal/store"
)

// clusterLink is the daemon's side of cluster membership: the node that
// publishes this daemon's bans, and which jails it shares.
type clusterLink struct {
	node  *cluster.Node
	share []string // nil = every jail
}

// remoteKey marks a context whose ban or unban came from another node: it
// is applied but not published again.
type remoteKey struct{}

func remoteCtx(ctx context.Context) context.Context { return context.WithValue(ctx, remoteKey{}, true) }

func isRemote(ctx context.Context) bool { v, _ := ctx.Value(remoteKey{}).(bool); return v }

// remoteReason is the reason of a ban applied for another node: `bans` and
// `why` show the origin node with it.
func remoteReason(origin, reason string) string { return "cluster " + origin + ": " + reason }

// shareBans hands the local bans rows to the cluster publisher. It only
// queues them (cluster.Node.Offer never waits): the kernel path is never
// delayed by NATS.
func (d *Daemon) shareBans(ctx context.Context, rows []store.Ban) {
	l := d.cluster.Load()
	if l == nil || isRemote(ctx) {
		return
	}
	for _, r := range rows {
		if l.share != nil && !slices.Contains(l.share, r.Jail) {
			continue
		}
		if !cluster.ValidName(r.Jail) {
			continue
		}
		l.node.Offer(cluster.Ban{Op: cluster.OpBan, Prefix: r.Prefix, Jail: r.Jail, Reason: r.Reason,
			At: d.now(), Until: r.Until, BanCount: r.Count})
	}
}

// shareUnbans publishes the lifting of local bans.
func (d *Daemon) shareUnbans(ctx context.Context, bans []BanInfo) {
	l := d.cluster.Load()
	if l == nil || isRemote(ctx) {
		return
	}
	now := d.now()
	for _, b := range bans {
		p, err := netip.ParsePrefix(b.Prefix)
		if err != nil || (l.share != nil && !slices.Contains(l.share, b.Jail)) || !cluster.ValidName(b.Jail) {
			continue
		}
		l.node.Offer(cluster.Ban{Op: cluster.OpUnban, Prefix: p, Jail: b.Jail, At: now})
	}
}

// ApplyRemote bans prefixes for other nodes: the same gate as Ban (the
// allowlist, which holds the trunks, first; the backend's allowlist gate
// last), one kernel batch and one store transaction for the lot. A ban
// already in force here for at least as long is left as it is (extend).
func (d *Daemon) ApplyRemote(ctx context.Context, rs []cluster.Remote) ([]bool, error) {
	now := d.now()
	applied := make([]bool, len(rs))
	var fw []firewall.Ban
	var rows, effs []store.Ban
	var idx []int
	d.fwMu.Lock()
	for i, r := range rs {
		pfx := normPrefix(r.Ban.Prefix)
		if entry, hit := d.opts.Allowed(pfx); hit {
			d.log.Info("remote ban refused: allowlisted", "origin", r.Ban.Origin, "prefix", pfx, "allowlist", entry)
			continue
		}
		if firewall.Special(pfx) {
			d.log.Info("remote ban refused: unspecified, broadcast or multicast", "origin", r.Ban.Origin, "prefix", pfx)
			continue
		}
		if !r.Until.After(now) {
			applied[i] = true // over already: nothing to do
			continue
		}
		row := store.Ban{Prefix: pfx, Addr: pfx.Addr(), Jail: r.Ban.Jail, Reason: remoteReason(r.Ban.Origin, r.Ban.Reason),
			Since: now, Until: r.Until, Count: d.opts.Store.PriorBans(pfx.Addr()) + 1}
		eff, kept := d.extend(row)
		if kept {
			applied[i] = true // already banned here for as long
			continue
		}
		fw = append(fw, firewall.Ban{Prefix: pfx, Timeout: eff.Remaining(now)})
		rows, effs = append(rows, row), append(effs, eff)
		idx = append(idx, i)
	}
	if len(fw) == 0 {
		d.fwMu.Unlock()
		return applied, nil
	}
	err := d.addOrHealLocked(ctx, fw)
	d.fwMu.Unlock()
	refused, rest := d.splitRefused(err)
	if len(refused) > 0 {
		d.forgetHeld(refused)
	}
	if rest != nil {
		d.metrics.backendErrors.WithLabelValues("add").Inc()
		// Not in the kernel: the messages are redelivered.
		for _, r := range rows {
			d.unhold(ctx, r.Prefix, now)
		}
		return nil, fmt.Errorf("firewall %s: %w", d.opts.Backend.Name(), rest)
	}
	keep, keepEff := rows[:0], effs[:0]
	for j, r := range rows {
		if refused[r.Prefix] {
			continue
		}
		keep, keepEff = append(keep, r), append(keepEff, effs[j])
		applied[idx[j]] = true
	}
	if len(keep) == 0 {
		return applied, nil
	}
	if err := d.opts.Store.AddBans(ctx, keep); err != nil {
		// Not stored: forget them as held too, so that the redelivery
		// adds and stores them instead of finding them "already in force".
		for _, r := range keep {
			d.unhold(ctx, r.Prefix, now)
		}
		return nil, err
	}
	d.noteActive(keepEff)
	d.markBanned(keepEff)
	for _, r := range keepEff {
		d.log.Info("banned for another node", "jail", r.Jail, "prefix", r.Prefix, "until", untilText(r), "reason", r.Reason)
	}
	return applied, nil
}

// UnbanRemote lifts a ban that origin made here; a ban of this node's own
// (or another node's) stays.
func (d *Daemon) UnbanRemote(ctx context.Context, b cluster.Ban) error {
	cur, ok, err := d.opts.Store.Ban(ctx, b.Prefix)
	if err != nil || !ok || !strings.HasPrefix(cur.Reason, remoteReason(b.Origin, "")) {
		return err
	}
	_, err = d.Unban(remoteCtx(ctx), b.Prefix)
	return err
}

// ClusterOptions turns the config section into the cluster node's options
// (the daemon's worker, pbxguard cluster status).
func ClusterOptions(cc config.Cluster, log *slog.Logger) (cluster.Options, error) {
	o := cluster.Options{Node: cc.Node, URLs: cc.NATS.URLs, CredsFile: cc.NATS.CredsFile, User: cc.NATS.User,
		NKeyFile: cc.NATS.NKeyFile, CAFile: cc.NATS.CAFile, CertFile: cc.NATS.CertFile, KeyFile: cc.NATS.KeyFile,
		Stream: cc.Stream.Name, Replicas: cc.Stream.Replicas, MaxAge: cc.Stream.MaxAge, Outbox: cc.Outbox,
		AcceptFrom: cc.AcceptFrom, MinReporters: cc.MinReporters, MaxBanTime: cc.MaxBanTime, Logger: log}
	if cc.NATS.PasswordFile != "" {
		pw, err := os.ReadFile(cc.NATS.PasswordFile)
		if err != nil {
			return o, fmt.Errorf("cluster.nats.password_file: %w (write the NATS password in it, mode 0600)", err)
		}
		o.Password = strings.TrimSpace(string(pw))
	}
	return o, nil
}

// clusterWorker connects the daemon to the other nodes (`cluster:`): its
// bans are published, theirs applied through ApplyRemote.
func clusterWorker(cc config.Cluster, log *slog.Logger) (*Worker, error) {
	if !cc.Enabled {
		return nil, nil
	}
	log = log.With("component", "cluster", "node", cc.Node)
	o, err := ClusterOptions(cc, log)
	if err != nil {
		return nil, err
	}
	return &Worker{Name: "cluster", Run: func(ctx context.Context, d *Daemon) error {
		o := o
		if ob, err := d.opts.Store.Outbox(ctx); err != nil {
			log.Error("cluster: the outbox will be kept in memory only", "err", err)
		} else {
			o.OutboxStore = ob
		}
		node, err := cluster.New(o, d)
		if err != nil {
			return err
		}
		if err := d.metrics.Registry.Register(node.Stats()); err != nil {
			log.Warn("cluster metrics", "err", err)
		} else {
			defer d.metrics.Registry.Unregister(node.Stats())
		}
		d.cluster.Store(&clusterLink{node: node, share: cc.Share})
		defer d.cluster.Store(nil)
		log.Info("cluster: sharing bans", "nats", o.URLs, "stream", o.Stream, "share", cc.Share,
			"accept_from", cc.AcceptFrom, "min_reporters", cc.MinReporters, "max_bantime", cc.MaxBanTime)
		return node.Run(ctx)
	}}, nil
}
