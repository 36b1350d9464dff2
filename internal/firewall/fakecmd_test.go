package firewall

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// fakeCmds is a fake kernel behind the command-line tools, for
// Options.Exec: ipset sets with their entries and timeouts, and the
// filter table of iptables and ip6tables (chains and rules as `iptables
// -S` prints them). Like the real tools it refuses what the kernel
// refuses: a set created again with other settings, destroying a set that
// a rule uses, a -D or -C of an absent rule, a restore transaction with
// one bad line (nothing of it is applied).
type fakeCmds struct {
	mu    sync.Mutex
	sets  map[string]*fakeSet
	ipt   map[string]*fakeIPT // "iptables", "ip6tables"
	calls []string
	fail  map[string]error // command name -> error
}

type fakeSet struct {
	typ, family string
	maxelem     int
	entries     map[string]int64 // entry -> timeout seconds
}

type fakeIPT struct {
	order  []string
	chains map[string][]string
}

func newFakeCmds() *fakeCmds {
	f := &fakeCmds{sets: map[string]*fakeSet{}, ipt: map[string]*fakeIPT{}, fail: map[string]error{}}
	for _, t := range []string{"iptables", "ip6tables"} {
		f.ipt[t] = &fakeIPT{order: []string{"INPUT", "FORWARD", "OUTPUT"}, chains: map[string][]string{"INPUT": nil, "FORWARD": nil, "OUTPUT": nil}}
	}
	return f
}

func (f *fakeCmds) opts(o Options) Options {
	o.Exec = f.exec
	return o
}

func (f *fakeCmds) exec(_ context.Context, stdin io.Reader, name string, args ...string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, name+" "+strings.Join(args, " "))
	if err := f.fail[name]; err != nil {
		return nil, err
	}
	var in string
	if stdin != nil {
		b, _ := io.ReadAll(stdin)
		in = string(b)
	}
	switch name {
	case "ipset":
		return f.ipset(in, args)
	case "iptables", "ip6tables":
		return f.iptables(f.ipt[name], args)
	case "iptables-save", "ip6tables-save":
		return f.save(f.ipt[strings.TrimSuffix(name, "-save")]), nil
	case "iptables-restore", "ip6tables-restore":
		return nil, f.restore(strings.TrimSuffix(name, "-restore"), in)
	}
	return nil, fmt.Errorf("exec: %q: executable file not found", name)
}

func (f *fakeCmds) referenced(set string) bool {
	for _, t := range f.ipt {
		for _, rules := range t.chains {
			for _, r := range rules {
				if strings.Contains(r, "--match-set "+set+" ") {
					return true
				}
			}
		}
	}
	return false
}

func (f *fakeCmds) ipset(in string, args []string) ([]byte, error) {
	if len(args) > 0 && args[0] == "-exist" {
		args = args[1:]
	}
	if len(args) == 0 {
		return nil, errors.New("ipset: no command")
	}
	switch args[0] {
	case "list":
		names := make([]string, 0, len(f.sets))
		for n := range f.sets {
			names = append(names, n)
		}
		sort.Strings(names)
		if len(args) == 3 && args[1] == "-n" {
			if f.sets[args[2]] == nil {
				return nil, errors.New("ipset v7: The set with the given name does not exist")
			}
			return []byte(args[2] + "\n"), nil
		}
		if len(args) == 2 && args[1] == "-n" {
			return []byte(strings.Join(names, "\n") + "\n"), nil
		}
		var b strings.Builder
		for _, n := range names {
			s := f.sets[n]
			fmt.Fprintf(&b, "Name: %s\nType: %s\nRevision: 4\nHeader: family %s hashsize 1024 maxelem %d timeout 3600 bucketsize 12\nSize in memory: 200\nReferences: 1\nNumber of entries: %d\n", n, s.typ, s.family, s.maxelem, len(s.entries))
		}
		return []byte(b.String()), nil
	case "create":
		if len(args) < 3 {
			return nil, errors.New("ipset: create: missing arguments")
		}
		s := &fakeSet{typ: args[2], entries: map[string]int64{}}
		for i := 3; i+1 < len(args); i++ {
			switch args[i] {
			case "family":
				s.family = args[i+1]
			case "maxelem":
				s.maxelem, _ = strconv.Atoi(args[i+1])
			}
		}
		if old := f.sets[args[1]]; old != nil {
			if old.typ != s.typ || old.family != s.family || old.maxelem != s.maxelem {
				return nil, errors.New("ipset v7: Set cannot be created: set with the same name already exists")
			}
			return nil, nil
		}
		f.sets[args[1]] = s
	case "destroy":
		if f.sets[args[1]] == nil {
			return nil, errors.New("ipset v7: The set with the given name does not exist")
		}
		if f.referenced(args[1]) {
			return nil, errors.New("ipset v7: Set cannot be destroyed: it is in use by a kernel component")
		}
		delete(f.sets, args[1])
	case "rename":
		if f.sets[args[1]] == nil || f.sets[args[2]] != nil {
			return nil, errors.New("ipset v7: cannot rename")
		}
		if f.referenced(args[1]) {
			return nil, errors.New("ipset v7: Set cannot be renamed: it is in use by another system")
		}
		f.sets[args[2]] = f.sets[args[1]]
		delete(f.sets, args[1])
		for _, t := range f.ipt {
			for c, rules := range t.chains {
				for i, r := range rules {
					t.chains[c][i] = strings.ReplaceAll(r, "--match-set "+args[1]+" ", "--match-set "+args[2]+" ")
				}
			}
		}
	case "flush":
		if s := f.sets[args[1]]; s != nil {
			s.entries = map[string]int64{}
		}
	case "save":
		s := f.sets[args[1]]
		if s == nil {
			return nil, errors.New("ipset v7: The set with the given name does not exist")
		}
		var b strings.Builder
		fmt.Fprintf(&b, "create %s %s family %s maxelem %d timeout 3600\n", args[1], s.typ, s.family, s.maxelem)
		for e, to := range s.entries {
			fmt.Fprintf(&b, "add %s %s timeout %d\n", args[1], e, to)
		}
		return []byte(b.String()), nil
	case "restore":
		// One transaction, like ipset restore's stop at the first error
		// (here: nothing applied).
		type op struct {
			add      bool
			set, key string
			to       int64
		}
		var ops []op
		sc := bufio.NewScanner(strings.NewReader(in))
		for n := 1; sc.Scan(); n++ {
			fl := strings.Fields(sc.Text())
			if len(fl) < 3 {
				continue
			}
			s := f.sets[fl[1]]
			if s == nil {
				return nil, fmt.Errorf("ipset v7: Error in line %d: The set with the given name does not exist", n)
			}
			o := op{add: fl[0] == "add", set: fl[1], key: fl[2]}
			if o.add && len(fl) == 5 {
				o.to, _ = strconv.ParseInt(fl[4], 10, 64)
			}
			if o.add && s.typ == "hash:ip" && strings.Contains(o.key, "/") {
				return nil, fmt.Errorf("ipset v7: Error in line %d: Syntax error: plain IP address must be supplied", n)
			}
			ops = append(ops, o)
		}
		for _, o := range ops {
			s := f.sets[o.set]
			if !o.add {
				delete(s.entries, o.key)
				continue
			}
			if _, ok := s.entries[o.key]; !ok && len(s.entries) >= s.maxelem {
				return nil, errors.New("ipset v7: Error in line 1: Hash is full, cannot add more elements")
			}
			s.entries[o.key] = o.to
		}
	default:
		return nil, fmt.Errorf("ipset: unknown command %s", args[0])
	}
	return nil, nil
}

func (f *fakeCmds) iptables(t *fakeIPT, args []string) ([]byte, error) {
	if len(args) > 0 && args[0] == "-w" {
		args = args[1:]
	}
	if len(args) == 0 {
		return nil, errors.New("iptables: no command")
	}
	chain := ""
	if len(args) > 1 {
		chain = args[1]
	}
	rule := ""
	if len(args) > 2 {
		rule = strings.Join(args[2:], " ")
	}
	_, exists := t.chains[chain]
	noChain := fmt.Errorf("iptables: No chain/target/match by that name.")
	switch args[0] {
	case "-S":
		var b strings.Builder
		for _, c := range t.order {
			if chain != "" && c != chain {
				continue
			}
			if c == "INPUT" || c == "FORWARD" || c == "OUTPUT" {
				fmt.Fprintf(&b, "-P %s ACCEPT\n", c)
			} else {
				fmt.Fprintf(&b, "-N %s\n", c)
			}
		}
		for _, c := range t.order {
			if chain != "" && c != chain {
				continue
			}
			for _, r := range t.chains[c] {
				fmt.Fprintf(&b, "-A %s %s\n", c, r)
			}
		}
		if chain != "" && !exists {
			return nil, noChain
		}
		return []byte(b.String()), nil
	case "-N":
		if exists {
			return nil, errors.New("iptables: Chain already exists.")
		}
		t.chains[chain] = nil
		t.order = append(t.order, chain)
	case "-X":
		if !exists {
			return nil, noChain
		}
		for _, rules := range t.chains {
			for _, r := range rules {
				if r == "-j "+chain {
					return nil, errors.New("iptables: Too many links.")
				}
			}
		}
		delete(t.chains, chain)
		for i, c := range t.order {
			if c == chain {
				t.order = append(t.order[:i], t.order[i+1:]...)
				break
			}
		}
	case "-F":
		if !exists {
			return nil, noChain
		}
		t.chains[chain] = nil
	case "-C", "-D":
		if !exists {
			return nil, noChain
		}
		for i, r := range t.chains[chain] {
			if r == rule {
				if args[0] == "-D" {
					t.chains[chain] = append(t.chains[chain][:i], t.chains[chain][i+1:]...)
				}
				return nil, nil
			}
		}
		return nil, errors.New("iptables: Bad rule (does a matching rule exist in that chain?).")
	case "-A":
		if !exists {
			return nil, noChain
		}
		t.chains[chain] = append(t.chains[chain], rule)
	case "-I":
		if !exists {
			return nil, noChain
		}
		rule = strings.Join(args[3:], " ")
		t.chains[chain] = append([]string{rule}, t.chains[chain]...)
	default:
		return nil, fmt.Errorf("iptables: unknown option %s", args[0])
	}
	return nil, nil
}

func (f *fakeCmds) save(t *fakeIPT) []byte {
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, c := range t.order {
		fmt.Fprintf(&b, ":%s ACCEPT [0:0]\n", c)
	}
	for _, c := range t.order {
		for _, r := range t.chains[c] {
			fmt.Fprintf(&b, "-A %s %s\n", c, r)
		}
	}
	b.WriteString("COMMIT\n")
	return []byte(b.String())
}

// restore applies a --noflush script as one transaction.
func (f *fakeCmds) restore(tables, script string) error {
	t := f.ipt[tables]
	work := map[string][]string{}
	for c, r := range t.chains {
		work[c] = append([]string(nil), r...)
	}
	sc := bufio.NewScanner(strings.NewReader(script))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		op, rest, _ := strings.Cut(line, " ")
		chain, rule, _ := strings.Cut(rest, " ")
		switch op {
		case "-A":
			if _, ok := work[chain]; !ok {
				return fmt.Errorf("%s-restore: line %d failed", tables, n)
			}
			work[chain] = append(work[chain], rule)
		case "-D":
			found := false
			for i, r := range work[chain] {
				if r == rule {
					work[chain] = append(work[chain][:i], work[chain][i+1:]...)
					found = true
					break
				}
			}
			if !found {
				return fmt.Errorf("%s-restore: line %d failed", tables, n)
			}
		case "-F":
			work[chain] = nil
		}
	}
	t.chains = work
	return nil
}

// rules returns a chain's rules in one family.
func (f *fakeCmds) rules(tables, chain string) ([]string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.ipt[tables].chains[chain]
	return append([]string(nil), r...), ok
}

// set returns a copy of an ipset's entries (nil: no set).
func (f *fakeCmds) set(name string) map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sets[name]
	if s == nil {
		return nil
	}
	out := map[string]int64{}
	for k, v := range s.entries {
		out[k] = v
	}
	return out
}

// run runs a command on the fake as somebody else would.
func (f *fakeCmds) run(name string, args ...string) error {
	_, err := f.exec(context.Background(), nil, name, args...)
	return err
}
