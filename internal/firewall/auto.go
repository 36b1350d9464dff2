package firewall

import (
	"context"
	"errors"
	"fmt"
)

// Detect picks the best backend this host supports: nftables when the
// kernel accepts a netlink nftables table (probed by creating and deleting
// a scratch table), else ipset+iptables when ipset works, else plain
// iptables, else dry-run with a loud warning. It does not call Init.
func Detect(ctx context.Context, opts Options) (Backend, error) {
	log := opts.logger()
	var why []error
	if n, err := NewNftables(opts); err == nil {
		if perr := n.Probe(); perr == nil {
			log.Info("firewall: auto picked nftables")
			return n, nil
		} else {
			why = append(why, perr)
		}
		n.Close()
	} else {
		why = append(why, err)
	}
	r := newRunner(opts)
	if s, err := NewIPSet(opts); err == nil {
		if _, perr := r.run(ctx, nil, "ipset", "list", "-n"); perr == nil {
			log.Info("firewall: auto picked ipset", "nftables", errors.Join(why...))
			return s, nil
		} else {
			why = append(why, perr)
		}
	} else {
		why = append(why, err)
	}
	if t, err := NewIPTables(opts); err == nil {
		if _, perr := r.run(ctx, nil, "iptables", "-w", "-S", "INPUT"); perr == nil {
			log.Info("firewall: auto picked iptables", "others", errors.Join(why...))
			return t, nil
		} else {
			why = append(why, perr)
		}
	} else {
		why = append(why, err)
	}
	log.Warn("firewall: NO WORKING FIREWALL (nftables, ipset, iptables all failed): using dry-run, bans are only logged and NOTHING IS BLOCKED",
		"why", fmt.Sprint(errors.Join(why...)))
	return NewDryRun(opts), nil
}
