package audit

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"testing/fstest"
)

// auditOf runs the audit over in-memory files.
func auditOf(t *testing.T, files map[string]string, opts Options) []Finding {
	t.Helper()
	fsys := fstest.MapFS{}
	for n, c := range files {
		fsys[n] = &fstest.MapFile{Data: []byte(c)}
	}
	// a logger.conf with security keeps logging.security-off out of the
	// other checks' tables
	if _, ok := fsys["logger.conf"]; !ok {
		fsys["logger.conf"] = &fstest.MapFile{Data: []byte("[logfiles]\nsecurity => security\n")}
	}
	r, err := RunFS(fsys, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r.Findings
}

func withID(fs []Finding, id string) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.ID == id {
			out = append(out, f)
		}
	}
	return out
}

func show(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "\n  %s %s %s:%d %s", f.Severity, f.ID, f.File, f.Line, f.Message)
	}
	return b.String()
}

const goodSIP = `[general]
context=default
allowguest=no
alwaysauthreject=yes
`

const goodPJSIP = `[t](!)
type=endpoint
context=from-internal
[100](t)
auth=100
[100]
type=auth
username=100
password=Xk4vQ9mT2rLp8Wz
`

// checkCase is a configuration that must give want findings of id at
// file:line, with severity sev.
type checkCase struct {
	name  string
	id    string
	files map[string]string
	opts  Options
	want  []string // "file:line severity", empty for a near-miss
}

func TestChecks(t *testing.T) {
	cases := []checkCase{
		// sip.allowguest
		{"allowguest yes", "sip.allowguest", map[string]string{"sip.conf": "[general]\nallowguest=yes\n"}, Options{}, []string{"sip.conf:2 high"}},
		{"allowguest absent defaults to yes", "sip.allowguest", map[string]string{"sip.conf": "[general]\ncontext=x\n"}, Options{}, []string{"sip.conf:1 high"}},
		{"allowguest no", "sip.allowguest", map[string]string{"sip.conf": goodSIP}, Options{}, nil},
		{"allowguest yes but chan_sip not loaded", "sip.allowguest", map[string]string{"sip.conf": "[general]\nallowguest=yes\n", "modules.conf": "[modules]\nautoload=yes\nnoload => chan_sip.so\n"}, Options{}, nil},
		{"allowguest yes then no: last wins", "sip.allowguest", map[string]string{"sip.conf": "[general]\nallowguest=yes\nallowguest=no\n"}, Options{}, nil},
		// sip.alwaysauthreject
		{"alwaysauthreject no", "sip.alwaysauthreject", map[string]string{"sip.conf": goodSIP + "alwaysauthreject=no\n"}, Options{}, []string{"sip.conf:5 medium"}},
		{"alwaysauthreject yes", "sip.alwaysauthreject", map[string]string{"sip.conf": goodSIP}, Options{}, nil},
		// sip.insecure
		{"insecure=invite dynamic", "sip.insecure", map[string]string{"sip.conf": goodSIP + "[p]\ntype=friend\nhost=dynamic\ninsecure=port,invite\nsecret=Xk4vQ9mT2rLp8Wz\n"}, Options{}, []string{"sip.conf:8 high"}},
		{"insecure=invite fixed host", "sip.insecure", map[string]string{"sip.conf": goodSIP + "[p]\ntype=peer\nhost=203.0.113.250\ninsecure=invite\n"}, Options{}, []string{"sip.conf:8 medium"}},
		{"insecure=port only", "sip.insecure", map[string]string{"sip.conf": goodSIP + "[p]\ntype=peer\nhost=203.0.113.250\ninsecure=port\n"}, Options{}, nil},
		// sip.no-secret, sip.autocreatepeer, iax.no-secret
		{"dynamic peer without secret", "sip.no-secret", map[string]string{"sip.conf": goodSIP + "[2001]\ntype=friend\nhost=dynamic\n"}, Options{}, []string{"sip.conf:5 high"}},
		{"trunk peer with fixed host", "sip.no-secret", map[string]string{"sip.conf": goodSIP + "[carrier]\ntype=peer\nhost=203.0.113.250\n"}, Options{}, nil},
		{"autocreatepeer", "sip.autocreatepeer", map[string]string{"sip.conf": goodSIP + "autocreatepeer=yes\n"}, Options{}, []string{"sip.conf:5 critical"}},
		{"autocreatepeer no", "sip.autocreatepeer", map[string]string{"sip.conf": goodSIP + "autocreatepeer=no\n"}, Options{}, nil},
		{"iax guest user", "iax.no-secret", map[string]string{"iax.conf": "[general]\n[guest]\ntype=user\ncontext=guest\n"}, Options{}, []string{"iax.conf:2 high"}},
		{"iax user with rsa keys", "iax.no-secret", map[string]string{"iax.conf": "[general]\n[hq]\ntype=user\nauth=rsa\ninkeys=hq\n"}, Options{}, nil},
		// pjsip.anonymous-endpoint
		{"anonymous endpoint", "pjsip.anonymous-endpoint", map[string]string{"pjsip.conf": goodPJSIP + "[anonymous]\ntype=endpoint\ncontext=from-external\n"}, Options{}, []string{"pjsip.conf:10 high"}},
		{"endpoint without auth or identify", "pjsip.anonymous-endpoint", map[string]string{"pjsip.conf": goodPJSIP + "[200](t)\n"}, Options{}, []string{"pjsip.conf:10 high"}},
		{"trunk identified by IP", "pjsip.anonymous-endpoint", map[string]string{"pjsip.conf": goodPJSIP + "[carrier]\ntype=endpoint\ncontext=in\n[carrier]\ntype=identify\nendpoint=carrier\nmatch=203.0.113.250\n"}, Options{}, nil},
		{"anonymous as a template only", "pjsip.anonymous-endpoint", map[string]string{"pjsip.conf": goodPJSIP + "[anonymous](!)\ntype=endpoint\n"}, Options{}, nil},
		// pjsip.auth-missing
		{"auth names nothing", "pjsip.auth-missing", map[string]string{"pjsip.conf": goodPJSIP + "[200](t)\nauth=nope\n"}, Options{}, []string{"pjsip.conf:11 high"}},
		{"auth without password", "pjsip.auth-missing", map[string]string{"pjsip.conf": goodPJSIP + "[200](t)\nauth=a200\n[a200]\ntype=auth\nusername=200\n"}, Options{}, []string{"pjsip.conf:12 high"}},
		{"auth with password", "pjsip.auth-missing", map[string]string{"pjsip.conf": goodPJSIP}, Options{}, nil},
		// secret.weak
		{"short pjsip password", "secret.weak", map[string]string{"pjsip.conf": strings.Replace(goodPJSIP, "Xk4vQ9mT2rLp8Wz", "Xk4vQ9m", 1)}, Options{}, []string{"pjsip.conf:9 high"}},
		{"common pjsip password", "secret.weak", map[string]string{"pjsip.conf": strings.Replace(goodPJSIP, "Xk4vQ9mT2rLp8Wz", "password123", 1)}, Options{}, []string{"pjsip.conf:9 critical"}},
		{"digits-only long secret", "secret.weak", map[string]string{"sip.conf": goodSIP + "[2001]\ntype=friend\nsecret=839201748291\n"}, Options{}, []string{"sip.conf:7 high"}},
		{"secret equals extension", "secret.weak", map[string]string{"iax.conf": "[general]\n[extension5001]\ntype=friend\nsecret=EXTENSION5001\n"}, Options{}, []string{"iax.conf:4 critical"}},
		{"md5secret of a common password", "secret.weak", map[string]string{"sip.conf": goodSIP + "[2001]\ntype=friend\nmd5secret=" + md5hex("2001:asterisk:1234") + "\n"}, Options{}, []string{"sip.conf:7 critical"}},
		{"weak AMI secret", "secret.weak", map[string]string{"manager.conf": "[general]\nenabled=yes\nbindaddr=127.0.0.1\n[admin]\nsecret=admin\n"}, Options{}, []string{"manager.conf:5 critical"}},
		{"strong secrets everywhere", "secret.weak", map[string]string{
			"sip.conf":     goodSIP + "[2001]\ntype=friend\nsecret=Mb3Xr8Kq2Wz5\nmd5secret=" + md5hex("2001:asterisk:Mb3Xr8Kq2Wz5") + "\n",
			"pjsip.conf":   goodPJSIP,
			"iax.conf":     "[5001]\ntype=friend\nsecret=IaxSecret881\n",
			"manager.conf": "[general]\nenabled=yes\n[admin]\nsecret=S3cretAmiPw77\n"}, Options{}, nil},
		// acl.open
		{"permit everything v4", "acl.open", map[string]string{"sip.conf": goodSIP + "[2001]\ntype=friend\nsecret=Mb3Xr8Kq2Wz5\ndeny=0.0.0.0/0.0.0.0\npermit=0.0.0.0/0.0.0.0\n"}, Options{}, []string{"sip.conf:9 high"}},
		{"permit everything v6 in a list", "acl.open", map[string]string{"pjsip.conf": goodPJSIP + "[acl]\ntype=acl\ndeny=::/0\npermit=2001:db8::/32, ::/0\n"}, Options{}, []string{"pjsip.conf:13 high"}},
		{"deny everything, permit a network", "acl.open", map[string]string{"manager.conf": "[general]\nenabled=yes\n[a]\nsecret=S3cretAmiPw77\ndeny=0.0.0.0/0\npermit=198.51.100.0/24\n"}, Options{}, nil},
		// acl.missing
		{"one peer without ACL", "acl.missing", map[string]string{"sip.conf": goodSIP +
			"[2001]\ntype=friend\nsecret=Mb3Xr8Kq2Wz5\ndeny=0.0.0.0/0.0.0.0\npermit=198.51.100.0/24\n[2002]\ntype=friend\nsecret=Pf7Yh1Nc4Tv9\n"}, Options{}, []string{"sip.conf:10 low"}},
		{"every peer has an ACL or an identify", "acl.missing", map[string]string{"pjsip.conf": strings.Replace(goodPJSIP, "auth=100\n", "auth=100\ndeny=0.0.0.0/0\npermit=198.51.100.0/24\n", 1) +
			"[carrier]\ntype=endpoint\n[carrier]\ntype=identify\nendpoint=carrier\nmatch=203.0.113.250\n"}, Options{}, nil},
		{"permit without deny is not an ACL", "acl.missing", map[string]string{"sip.conf": goodSIP +
			"[2001]\ntype=friend\nsecret=Mb3Xr8Kq2Wz5\ndeny=0.0.0.0/0.0.0.0\npermit=198.51.100.0/24\n[2002]\ntype=friend\nsecret=Pf7Yh1Nc4Tv9\npermit=198.51.100.0/24\n"}, Options{}, []string{"sip.conf:10 low"}},
		{"identify-only trunk does not make phones need an ACL", "acl.missing", map[string]string{"pjsip.conf": goodPJSIP +
			"[carrier]\ntype=endpoint\n[carrier]\ntype=identify\nendpoint=carrier\nmatch=203.0.113.250\n"}, Options{}, nil},
		// ami.exposed
		{"AMI user without ACL on 0.0.0.0", "ami.exposed", map[string]string{"manager.conf": "[general]\nenabled=yes\nbindaddr=0.0.0.0\n[mon]\nsecret=Mon1torPw55Long\nread=cdr\n"}, Options{}, []string{"manager.conf:4 high"}},
		{"AMI user without ACL and weak secret", "ami.exposed", map[string]string{"manager.conf": "[general]\nenabled=yes\n[mon]\nsecret=mon\n"}, Options{}, []string{"manager.conf:3 critical"}},
		{"AMI on loopback", "ami.exposed", map[string]string{"manager.conf": "[general]\nenabled=yes\nbindaddr=127.0.0.1\n[mon]\nsecret=Mon1torPw55Long\n"}, Options{}, nil},
		{"AMI disabled", "ami.exposed", map[string]string{"manager.conf": "[general]\nenabled=no\n[mon]\nsecret=x\n"}, Options{}, nil},
		{"AMI user with ACL", "ami.exposed", map[string]string{"manager.conf": "[general]\nenabled=yes\n[mon]\nsecret=Mon1torPw55Long\ndeny=0.0.0.0/0.0.0.0\npermit=198.51.100.0/24\n"}, Options{}, nil},
		// ami.too-powerful
		{"remote write=system", "ami.too-powerful", map[string]string{"manager.conf": "[general]\nenabled=yes\n[ops]\nsecret=S3cretAmiPw77\nwrite=call,system\n"}, Options{}, []string{"manager.conf:5 high"}},
		{"LAN write=all", "ami.too-powerful", map[string]string{"manager.conf": "[general]\nenabled=yes\n[ops]\nsecret=S3cretAmiPw77\ndeny=0.0.0.0/0\npermit=198.51.100.0/24\nwrite=all\n"}, Options{}, []string{"manager.conf:7 medium"}},
		{"loopback-only write=all", "ami.too-powerful", map[string]string{"manager.conf": "[general]\nenabled=yes\n[ops]\nsecret=S3cretAmiPw77\ndeny=0.0.0.0/0\npermit=127.0.0.1/32\nwrite=all\n"}, Options{}, nil},
		{"remote write=call", "ami.too-powerful", map[string]string{"manager.conf": "[general]\nenabled=yes\n[ops]\nsecret=S3cretAmiPw77\nwrite=call,reporting\n"}, Options{}, nil},
		// http.exposed
		{"http public with ARI users", "http.exposed", map[string]string{"http.conf": "[general]\nenabled=yes\nbindaddr=0.0.0.0\n", "ari.conf": "[general]\nenabled=yes\n[app]\ntype=user\npassword=Xk4vQ9mT2rLp8Wz\n"}, Options{}, []string{"http.conf:3 high"}},
		{"http public, nothing behind it", "http.exposed", map[string]string{"http.conf": "[general]\nenabled=yes\nbindaddr=::\n"}, Options{}, []string{"http.conf:3 medium"}},
		{"http on loopback", "http.exposed", map[string]string{"http.conf": "[general]\nenabled=yes\nbindaddr=127.0.0.1\n", "ari.conf": "[app]\ntype=user\npassword=Xk4vQ9mT2rLp8Wz\n"}, Options{}, nil},
		// dialplan.intl-open
		{"untrusted endpoint reaches 00 via include", "dialplan.intl-open", map[string]string{"pjsip.conf": goodPJSIP,
			"extensions.conf": "[from-internal]\ninclude => local\ninclude => intl\n[local]\nexten => _1XX,1,Dial(PJSIP/${EXTEN})\n[intl]\nexten => _00X.,1,Dial(PJSIP/${EXTEN}@carrier)\n"}, Options{}, []string{"extensions.conf:7 high"}},
		{"trusted endpoint", "dialplan.intl-open", map[string]string{"pjsip.conf": goodPJSIP,
			"extensions.conf": "[from-internal]\ninclude => intl\n[intl]\nexten => _00X.,1,Dial(PJSIP/${EXTEN}@carrier)\n"}, Options{TrustedEndpoints: []string{"PJSIP/100"}}, nil},
		{"guest context with a catch-all", "dialplan.intl-open", map[string]string{"sip.conf": "[general]\nallowguest=yes\ncontext=public\n",
			"extensions.conf": "[public]\nexten => _X!,1,Goto(out,${EXTEN},1)\n"}, Options{TrustedEndpoints: []string{"guest"}}, []string{"extensions.conf:2 critical"}},
		{"anonymous endpoint reaching +", "dialplan.intl-open", map[string]string{"pjsip.conf": "[anonymous]\ntype=endpoint\ncontext=in\n",
			"extensions.conf": "[in]\nexten => _+X.,1,Dial(PJSIP/${EXTEN}@carrier)\n"}, Options{TrustedEndpoints: []string{"anonymous"}}, []string{"extensions.conf:2 critical"}},
		{"include cycle and domestic only", "dialplan.intl-open", map[string]string{"pjsip.conf": goodPJSIP,
			"extensions.conf": "[from-internal]\ninclude => a\n[a]\ninclude => from-internal\nexten => _NXXNXXXXXX,1,Dial(PJSIP/${EXTEN}@carrier)\nexten => _X.,1,Hangup()\n"}, Options{}, nil},
		// dialplan.wildcard
		{"_. catch-all", "dialplan.wildcard", map[string]string{"extensions.conf": "[c]\nexten => _.,1,Dial(SIP/trunk/${EXTEN})\n"}, Options{}, []string{"extensions.conf:2 medium"}},
		{"_X. catch-all", "dialplan.wildcard", map[string]string{"extensions.conf": "[c]\nexten => _X.,1,Goto(out,${EXTEN},1)\n"}, Options{}, []string{"extensions.conf:2 low"}},
		{"specific patterns and a harmless catch-all", "dialplan.wildcard", map[string]string{"extensions.conf": "[c]\nexten => _9NXXXXXX,1,Dial(SIP/trunk/${EXTEN})\nexten => _X.,1,Playback(invalid)\n same => n,Hangup()\n"}, Options{}, nil},
		// dialplan.no-limit
		{"Dial to a trunk without limit", "dialplan.no-limit", map[string]string{"extensions.conf": "[out]\nexten => _NXXNXXXXXX,1,NoOp()\n same => n,Dial(PJSIP/${EXTEN}@carrier,30)\n"}, Options{}, []string{"extensions.conf:3 medium"}},
		{"chan_sip trunk form", "dialplan.no-limit", map[string]string{"extensions.conf": "[out]\nexten => _9.,1,Dial(SIP/carrier/${EXTEN:1})\n"}, Options{}, []string{"extensions.conf:2 medium"}},
		{"GROUP_COUNT before Dial", "dialplan.no-limit", map[string]string{"extensions.conf": "[out]\nexten => _NXXNXXXXXX,1,Set(GROUP()=out)\n same => n,GotoIf($[${GROUP_COUNT()} > 2]?busy)\n same => n,Dial(PJSIP/${EXTEN}@carrier,30)\n"}, Options{}, nil},
		{"limit in a Gosub", "dialplan.no-limit", map[string]string{"extensions.conf": "[out]\nexten => _NXXNXXXXXX,1,Gosub(limit,s,1)\n same => n,Dial(PJSIP/${EXTEN}@carrier,30)\n[limit]\nexten => s,1,GotoIf($[${GROUP_COUNT(x)} > 2]?full)\n same => n,Return()\n"}, Options{}, nil},
		{"chan_sip trunk with call-limit", "dialplan.no-limit", map[string]string{"sip.conf": goodSIP + "[carrier]\ntype=peer\nhost=203.0.113.250\ncall-limit=4\n", "extensions.conf": "[out]\nexten => _9.,1,Dial(SIP/carrier/${EXTEN:1})\n"}, Options{}, nil},
		{"internal Dial", "dialplan.no-limit", map[string]string{"extensions.conf": "[c]\nexten => _1XX,1,Dial(PJSIP/${EXTEN},20)\nexten => 200,1,Dial(Local/100@c)\n"}, Options{}, nil},
		// logging.security-off
		{"no security channel", "logging.security-off", map[string]string{"logger.conf": "[logfiles]\nmessages => notice,warning,error\n"}, Options{}, []string{"logger.conf:1 medium"}},
		{"no logger.conf", "logging.security-off", map[string]string{"sip.conf": goodSIP}, Options{}, nil}, // auditOf adds one: see TestSecurityLogMissingFile
		{"security in a formatted channel", "logging.security-off", map[string]string{"logger.conf": "[logfiles]\nsyslog.local0 => [plain]notice,security\n"}, Options{}, nil},
		{"* level", "logging.security-off", map[string]string{"logger.conf": "[logfiles]\nfull => *\n"}, Options{}, nil},
		// config.*
		{"missing include", "config.include", map[string]string{"sip.conf": goodSIP + "#include nope.conf\n"}, Options{}, []string{"sip.conf:5 medium"}},
		{"missing tryinclude", "config.include", map[string]string{"sip.conf": goodSIP + "#tryinclude nope.conf\n"}, Options{}, nil},
		{"exec", "config.exec", map[string]string{"sip.conf": goodSIP + "#exec /usr/local/bin/peers\n"}, Options{}, []string{"sip.conf:5 medium"}},
	}
	for _, c := range cases {
		t.Run(c.id+"/"+c.name, func(t *testing.T) {
			all := auditOf(t, c.files, c.opts)
			got := withID(all, c.id)
			var gotS []string
			for _, f := range got {
				gotS = append(gotS, fmt.Sprintf("%s:%d %s", f.File, f.Line, f.Severity))
			}
			if strings.Join(gotS, "|") != strings.Join(c.want, "|") {
				t.Errorf("%s: got %v want %v; all findings:%s", c.id, gotS, c.want, show(all))
			}
			for _, f := range got {
				if f.Message == "" || f.Fix == "" {
					t.Errorf("finding without message or fix: %+v", f)
				}
				if _, ok := ruleText[f.ID]; !ok {
					t.Errorf("id %s not in Rules", f.ID)
				}
			}
		})
	}
}

func TestSecurityLogMissingFile(t *testing.T) {
	r, err := RunFS(fstest.MapFS{"sip.conf": {Data: []byte(goodSIP)}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := withID(r.Findings, "logging.security-off")
	if len(got) != 1 || got[0].File != "logger.conf" || got[0].Line != 0 {
		t.Fatalf("got %s", show(r.Findings))
	}
}

func TestIntlOpenEveryEndpoint(t *testing.T) {
	all := auditOf(t, map[string]string{
		"pjsip.conf":      goodPJSIP + "[101](t)\nauth=100\n",
		"extensions.conf": "[from-internal]\nexten => _X.,1,Dial(PJSIP/${EXTEN}@carrier)\n",
	}, Options{})
	got := withID(all, "dialplan.intl-open")
	if len(got) != 1 || !strings.Contains(got[0].Message, "every endpoint (all 2, none marked trusted): PJSIP/100, PJSIP/101") {
		t.Fatalf("got:%s", show(all))
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	all := auditOf(t, map[string]string{
		"pjsip.conf":   strings.Replace(goodPJSIP, "Xk4vQ9mT2rLp8Wz", "hunter2x", 1),
		"manager.conf": "[general]\nenabled=yes\n[mon]\nsecret=zebra77\n",
	}, Options{})
	if len(all) == 0 {
		t.Fatal("no findings")
	}
	for _, f := range all {
		if strings.Contains(f.Message, "hunter2x") || strings.Contains(f.Message, "zebra77") {
			t.Errorf("secret in message: %s", f.Message)
		}
	}
}

func TestPatterns(t *testing.T) {
	tests := []struct {
		pattern  string
		intl     bool
		catchAll bool
	}{
		{"_00X.", true, false}, {"_011X.", true, false}, {"_9011X.", true, false}, {"_+X.", true, false},
		{"_X.", true, true}, {"_.", true, true}, {"_X!", true, true}, {"_!", true, true}, {"_0.", true, false},
		{"_9.", true, false}, {"_[0-9].", true, true}, {"_00[1-9]X.", true, false},
		{"_NXXNXXXXXX", false, false}, {"_1NXXNXXXXXX", false, false}, {"_10XX", false, false},
		{"_2XX", false, false}, {"0044123456789", false, false}, {"_[]", false, false}, {"_[", false, false},
	}
	for _, tt := range tests {
		if got := matchesIntl(tt.pattern); got != tt.intl {
			t.Errorf("matchesIntl(%q) = %v", tt.pattern, got)
		}
		if got := isCatchAll(tt.pattern); got != tt.catchAll {
			t.Errorf("isCatchAll(%q) = %v", tt.pattern, got)
		}
	}
}

func TestParseACLPrefix(t *testing.T) {
	tests := map[string]string{
		"0.0.0.0/0.0.0.0":            "0.0.0.0/0",
		"0.0.0.0/0":                  "0.0.0.0/0",
		"198.51.100.0/255.255.255.0": "198.51.100.0/24",
		"127.0.0.1":                  "127.0.0.1/32",
		"::/0":                       "::/0",
		"2001:db8::/32":              "2001:db8::/32",
		"!203.0.113.5":               "203.0.113.5/32",
	}
	for in, want := range tests {
		p, ok := parseACLPrefix(in)
		if !ok || p.String() != want {
			t.Errorf("parseACLPrefix(%q) = %v %v, want %s", in, p, ok, want)
		}
	}
	for _, bad := range []string{"", "host.example", "10.0.0.0/33", "10.0.0.0/x"} {
		if _, ok := parseACLPrefix(bad); ok {
			t.Errorf("parseACLPrefix(%q) accepted", bad)
		}
	}
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestTrunkTargets(t *testing.T) {
	tests := map[string]string{
		"PJSIP/${EXTEN}@carrier,30":                        "carrier",
		"PJSIP/carrier/sip:${EXTEN}@203.0.113.250":         "carrier",
		"SIP/carrier/${EXTEN:1}":                           "carrier",
		"SIP/${EXTEN}@carrier":                             "carrier",
		"IAX2/user:secret@example.com/${EXTEN}@ctx":        "example.com",
		"DAHDI/g1/${EXTEN}":                                "DAHDI/g1",
		"PJSIP/${EXTEN},20":                                "",
		"SIP/2001&PJSIP/1001":                              "",
		"Local/100@internal":                               "",
		"IAX2/5001":                                        "",
		"PJSIP/${EXTEN}@carrier&SIP/backup/${EXTEN},30,tT": "carrier,backup",
	}
	for in, want := range tests {
		if got := strings.Join(trunkTargets(in), ","); got != want {
			t.Errorf("trunkTargets(%q) = %q want %q", in, got, want)
		}
	}
}

func TestSubroutineOnlyExtensionIsNotARoute(t *testing.T) {
	all := auditOf(t, map[string]string{
		"pjsip.conf":      goodPJSIP,
		"extensions.conf": "[from-internal]\nexten => _X.,50000(stdexten),Dial(${ARG1},20)\n same => n,Return()\n",
	}, Options{})
	for _, id := range []string{"dialplan.intl-open", "dialplan.wildcard"} {
		if len(withID(all, id)) != 0 {
			t.Errorf("%s for a Gosub-only extension:%s", id, show(all))
		}
	}
}
