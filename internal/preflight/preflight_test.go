package preflight

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pbxguard/pbxguard/internal/config"
)

func testOpts(t *testing.T) Options {
	t.Helper()
	dir := t.TempDir()
	return Options{
		Config: config.Options{
			LoggerConf: filepath.Join(dir, "logger.conf"), AsteriskConf: filepath.Join(dir, "asterisk.conf"),
			AsteriskLogs: filepath.Join(dir, "log"), AuthLog: filepath.Join(dir, "auth.log"),
			HostPrefixes: func() []netip.Prefix { return nil }, HaveJournal: func() bool { return true },
		},
		HaveJournalctl: func() bool { return true },
		Root:           func() bool { return true },
	}
}

func write(t *testing.T, path, data string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func check(t *testing.T, src string) *Report {
	t.Helper()
	dir := t.TempDir()
	// The control socket in a directory any user can create (the default,
	// /run/pbxguard, is root's); appended, so the lines above stay.
	src += "control: {socket: " + dir + "/run/pbxguard.sock}\n"
	path := write(t, filepath.Join(dir, "pbxguard.yaml"), src)
	return Check(path, testOpts(t))
}

func has(list []string, want string) bool {
	for _, s := range list {
		if strings.Contains(s, want) {
			return true
		}
	}
	return false
}

func texts(r *Report) (errs, warns []string) {
	for _, e := range r.Errors {
		errs = append(errs, e.Error())
	}
	for _, w := range r.Warnings {
		warns = append(warns, w.Error())
	}
	return errs, warns
}

// Issue 9 point 5: what `run` refused or ran crippled with, `config check`
// passed. Each case is an error here, with its line.
func TestAMISecretAndAddr(t *testing.T) {
	dir := t.TempDir()
	empty := write(t, filepath.Join(dir, "empty.secret"), " \n")
	good := write(t, filepath.Join(dir, "ami.secret"), "s3cret\n")
	for name, tc := range map[string]struct{ src, want string }{
		"missing": {"state_dir: " + dir + "\njails: {}\nfraud:\n  country: US\n  ami:\n    secret_file: " + dir + "/nope\n",
			"config: line 6: fraud.ami.secret_file: AMI secret file " + dir + "/nope does not exist"},
		"empty": {"state_dir: " + dir + "\njails: {}\nfraud:\n  country: US\n  ami:\n    secret_file: " + empty + "\n",
			"config: line 6: fraud.ami.secret_file: AMI secret file " + empty + " is empty"},
		"directory": {"state_dir: " + dir + "\njails: {}\nfraud:\n  country: US\n  ami:\n    secret_file: " + dir + "\n",
			"config: line 6: fraud.ami.secret_file: AMI secret file " + dir + " is a directory, not a file"},
		"addr without port": {"state_dir: " + dir + "\njails: {}\nfraud:\n  country: US\n  ami:\n    addr: 127.0.0.1\n    secret_file: " + good + "\n",
			`config: line 6: fraud.ami.addr: "127.0.0.1" is not host:port`},
		"ami jail, default secret": {"state_dir: " + dir + "\njails:\n  asterisk:\n    source: ami\n",
			"config: line 3: jails.asterisk.source: AMI secret file /etc/pbxguard/ami.secret"},
	} {
		t.Run(name, func(t *testing.T) {
			r := check(t, tc.src)
			errs, _ := texts(r)
			if r.OK() || r.Code(false) != ExitErrors || !has(errs, tc.want) {
				t.Fatalf("errors %q, want %q (exit 2)", errs, tc.want)
			}
		})
	}
	r := check(t, "state_dir: "+dir+"\njails: {}\nfraud:\n  country: US\n  ami:\n    secret_file: "+good+"\n")
	if errs, warns := texts(r); !r.OK() || r.Fraud == nil || len(warns) != 0 {
		t.Fatalf("good secret: errors %q warnings %q", errs, warns)
	}
}

func TestFollowedFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	secret := write(t, filepath.Join(dir, "s"), "x")
	r := check(t, "state_dir: "+dir+"\njails:\n  asterisk:\n    files:\n      - "+dir+"/later.log\n      - "+dir+"\n      - "+fifo+
		"\nfraud:\n  country: US\n  ami: {secret_file: "+secret+"}\n  cdr: "+dir+"/cdr-csv/Master.csv\n")
	errs, warns := texts(r)
	for _, want := range []string{
		"config: line 4: jails.asterisk.files: jail asterisk: log file " + dir + " is not a regular file (a directory)",
		"config: line 4: jails.asterisk.files: jail asterisk: log file " + fifo + " is not a regular file (a FIFO)",
		"config: line 4: jails.asterisk.files: jail asterisk: log file " + dir + "/later.log does not exist yet",
		"config: line 11: fraud.cdr: CDR file " + dir + "/cdr-csv/Master.csv does not exist yet",
	} {
		if !has(warns, want) {
			t.Errorf("warnings %q lack %q", warns, want)
		}
	}
	if len(errs) != 0 {
		t.Errorf("errors = %q (a bad path is a warning: the other sources must run)", errs)
	}
}

func TestStateDir(t *testing.T) {
	dir := t.TempDir()
	file := write(t, filepath.Join(dir, "file"), "")
	for src, want := range map[string]string{
		"state_dir: " + file + "/state\njails: {}\n": "config: line 1: state_dir: " + file + "/state cannot be created: " + file + " is not a directory",
		"state_dir: " + file + "\njails: {}\n":       "config: line 1: state_dir: " + file + " is not a directory",
	} {
		r := check(t, src)
		if errs, _ := texts(r); !has(errs, want) {
			t.Errorf("errors %q lack %q", errs, want)
		}
	}
	if r := check(t, "state_dir: "+dir+"/new/deeper\njails: {}\n"); !r.OK() {
		t.Errorf("a creatable state_dir: %v", r.Err())
	}
	ro := filepath.Join(dir, "ro")
	os.Mkdir(ro, 0o500)
	if os.Geteuid() != 0 { // root writes anywhere
		path := write(t, filepath.Join(dir, "c.yaml"), "state_dir: "+ro+"/state\njails: {}\ncontrol: {socket: "+dir+"/s.sock}\n")
		opts := testOpts(t)
		r := Check(path, opts)
		if errs, _ := texts(r); !has(errs, "state_dir: "+ro+"/state cannot be created: "+ro+" is not writable") {
			t.Errorf("errors %q", errs)
		}
		opts.Root = func() bool { return false }
		if r := Check(path, opts); !r.OK() || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0].Msg, "check with sudo") {
			t.Errorf("as a user: errors %v warnings %v", r.Errors, r.Warnings)
		}
	}
}

// Every section's errors in one pass: the core keys, firewall.policy and
// fraud (today fraud and policy were checked only once the rest was clean,
// and policy stopped at its first error).
func TestEverySectionInOnePass(t *testing.T) {
	r := check(t, `state_dir: /var/lib/pbxguard
firewall:
  backend: nftable
  policy:
    input: reject
    port_scan: {ban: 1hr}
fraud:
  country: XX
  window: 10 minutes
jails:
  asterisk:
    files: [/var/log/x]
    bantime: 18446744074
`)
	errs, _ := texts(r)
	for _, want := range []string{
		`config: line 3: firewall.backend: "nftable" is not one of`,
		`config: line 5: firewall.policy.input: "reject" is not a policy`,
		`config: line 6: firewall.policy.port_scan.ban: "1hr" is not a duration`,
		`config: line 8: fraud.country: "XX"`,
		`config: line 9: fraud.window: "10 minutes" is not a duration`,
		`config: line 13: jails.asterisk.bantime: "18446744074" is out of range`,
	} {
		if !has(errs, want) {
			t.Errorf("errors lack %q:\n%s", want, strings.Join(errs, "\n"))
		}
	}
	for i := 1; i < len(r.Errors); i++ {
		if r.Errors[i].Line < r.Errors[i-1].Line {
			t.Errorf("errors not in file order: %q", errs)
		}
	}
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	r := check(t, "state_dir: "+dir+"\njails:\n  asterisk:\n    files: ["+dir+"/later.log]\n")
	if !r.OK() || len(r.Warnings) != 1 || r.Code(false) != ExitOK || r.Code(true) != ExitWarnings {
		t.Fatalf("warnings only: ok=%v warnings=%v codes %d %d", r.OK(), r.Warnings, r.Code(false), r.Code(true))
	}
	r = check(t, "jails: [\n")
	if r.OK() || r.Code(false) != ExitErrors || r.Config != nil || r.Errors[0].Line == 0 {
		t.Fatalf("YAML syntax: %+v", r.Errors)
	}
	r = Check(filepath.Join(dir, "absent.yaml"), testOpts(t))
	if r.OK() || !strings.Contains(r.Errors[0].Msg, "no such file") {
		t.Fatalf("absent file: %+v", r.Errors)
	}
}

func TestControlSocketDir(t *testing.T) {
	dir := t.TempDir()
	file := write(t, filepath.Join(dir, "file"), "")
	path := write(t, filepath.Join(dir, "c.yaml"), "state_dir: "+dir+"\njails: {}\ncontrol:\n  socket: "+file+"/pbxguard.sock\n")
	r := Check(path, testOpts(t))
	if errs, _ := texts(r); !has(errs, "config: line 4: control.socket: "+file+" is not a directory") {
		t.Fatalf("errors %q", errs)
	}
}
