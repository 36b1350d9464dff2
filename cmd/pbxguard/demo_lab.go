package main

// The demo's network lab: two throwaway namespaces (the PBX and the
// attacker) joined by a veth pair, documentation addresses only, deleted
// at the end; separate from the story runDemo tells.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// demoLab is the pair of namespaces.
type demoLab struct {
	pbx, attacker string
}

func newDemoLab(ctx context.Context) (*demoLab, error) {
	id := os.Getpid()
	lab := &demoLab{pbx: fmt.Sprintf("pbxguard-demo-pbx-%d", id), attacker: fmt.Sprintf("pbxguard-demo-atk-%d", id)}
	vp, va := fmt.Sprintf("pgdp%d", id%100000), fmt.Sprintf("pgda%d", id%100000)
	steps := [][]string{
		{"netns", "add", lab.pbx},
		{"netns", "add", lab.attacker},
		{"-n", lab.pbx, "link", "set", "lo", "up"},
		{"-n", lab.attacker, "link", "set", "lo", "up"},
		{"link", "add", vp, "netns", lab.pbx, "type", "veth", "peer", "name", va, "netns", lab.attacker},
		{"-n", lab.pbx, "addr", "add", demoPBX + "/24", "dev", vp},
		{"-n", lab.attacker, "addr", "add", demoAttacker + "/24", "dev", va},
		{"-n", lab.pbx, "link", "set", vp, "up"},
		{"-n", lab.attacker, "link", "set", va, "up"},
		{"-n", lab.pbx, "route", "add", demoAttacker + "/32", "dev", vp},
		{"-n", lab.attacker, "route", "add", demoPBX + "/32", "dev", va},
	}
	for _, s := range steps {
		if out, err := exec.CommandContext(ctx, "ip", s...).CombinedOutput(); err != nil {
			if ctx.Err() != nil {
				return lab, errors.New("interrupted; lab cleaned up")
			}
			return lab, fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return lab, nil
}

// Close deletes the namespaces (and with them the veth pair and the
// pbxguard table that lived in the pbx namespace).
func (l *demoLab) Close() {
	for _, ns := range []string{l.pbx, l.attacker} {
		exec.Command("ip", "netns", "del", ns).Run()
	}
}

// inNetns runs fn on an OS thread switched into the named namespace.
// Sockets made there stay in that namespace.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/run/netns", name))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- errors.Join(ferr, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

type demoListener struct {
	conn  *net.UDPConn
	count atomic.Int64
	wg    sync.WaitGroup
}

func (l *demoLab) listen() (*demoListener, error) {
	dl := &demoListener{}
	err := inNetns(l.pbx, func() error {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(fmt.Sprintf("%s:%d", demoPBX, demoSIPPort))))
		dl.conn = c
		return err
	})
	if err != nil {
		return nil, err
	}
	dl.wg.Add(1)
	go func() {
		defer dl.wg.Done()
		buf := make([]byte, 2048)
		for {
			_, from, err := dl.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if from.Addr().Unmap().String() == demoAttacker {
				dl.count.Add(1)
			}
		}
	}()
	return dl, nil
}

func (dl *demoListener) waitAbove(n int64, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if dl.count.Load() > n {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return dl.count.Load() > n
}

func (dl *demoListener) Close() {
	dl.conn.Close()
	dl.wg.Wait()
}

func (l *demoLab) dialFromAttacker() (*net.UDPConn, error) {
	var c *net.UDPConn
	err := inNetns(l.attacker, func() error {
		var err error
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(fmt.Sprintf("%s:%d", demoPBX, demoSIPPort))))
		return err
	})
	return c, err
}
