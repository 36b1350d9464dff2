#!/usr/bin/env python3
"""A SIP registrar that behaves like Asterisk with alwaysauthreject=yes and
no logging: every REGISTER or INVITE without valid digest credentials is
answered 401 (whether the user exists or not), OPTIONS 200, and a REGISTER
with the right password 200. INVITEs from the carrier address are answered
200 without credentials (an identified trunk). Nothing is logged: only the
wire says what happened. Used by e2e/sensor_test.go.

usage: registrar.py PORT USER:PASSWORD CARRIER_ADDR COUNT_FILE
"""
import hashlib, re, socket, sys

port, cred, carrier, count_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
user, password = cred.split(":", 1)
realm, nonce = "asterisk", "4a3b2c1d"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("0.0.0.0", port))
received = 0

def md5(x):
    return hashlib.md5(x.encode()).hexdigest()

def header(msg, names):
    for line in msg.split("\r\n")[1:]:
        if not line:
            break
        k, _, v = line.partition(":")
        if k.strip().lower() in names:
            return v.strip()
    return None

def valid(method, auth):
    if not auth or not auth.lower().startswith("digest"):
        return False
    p = dict(re.findall(r'(\w+)="?([^",]*)"?', auth))
    if p.get("username") != user:
        return False
    ha1 = md5("%s:%s:%s" % (user, realm, password))
    ha2 = md5("%s:%s" % (method, p.get("uri", "")))
    if p.get("qop"):
        want = md5("%s:%s:%s:%s:%s:%s" % (ha1, p.get("nonce", ""), p.get("nc", ""), p.get("cnonce", ""), p["qop"], ha2))
    else:
        want = md5("%s:%s:%s" % (ha1, p.get("nonce", ""), ha2))
    return p.get("response") == want

while True:
    data, addr = s.recvfrom(65535)
    received += 1
    with open(count_file, "w") as f:
        f.write(str(received))
    try:
        msg = data.decode("utf-8", "replace")
    except Exception:
        continue
    first = msg.split("\r\n", 1)[0].split(" ")
    if len(first) < 3 or first[0].startswith("SIP/"):
        continue
    method = first[0]
    if method in ("ACK",):
        continue
    via = [l for l in msg.split("\r\n") if l.lower().startswith(("via:", "v:"))]
    keep = [header(msg, (n,)) for n in ("from", "to", "call-id", "cseq")]
    if None in keep:
        continue
    frm, to, callid, cseq = keep
    if method == "OPTIONS" or method == "BYE" or method == "CANCEL":
        code, extra = "200 OK", ""
    elif method == "INVITE" and addr[0] == carrier:
        code, extra = "200 OK", ""
    elif method in ("REGISTER", "INVITE") and valid(method, header(msg, ("authorization", "proxy-authorization"))):
        code, extra = "200 OK", "Expires: 60\r\n"
    else:
        code, extra = "401 Unauthorized", 'WWW-Authenticate: Digest realm="%s", nonce="%s", algorithm=MD5\r\n' % (realm, nonce)
    resp = "SIP/2.0 %s\r\n%s\r\nFrom: %s\r\nTo: %s;tag=pbx1\r\nCall-ID: %s\r\nCSeq: %s\r\nServer: FPBX-16.0.40(18.20.0)\r\n%sContent-Length: 0\r\n\r\n" % (
        code, "\r\n".join(via), frm, to, callid, cseq, extra)
    s.sendto(resp.encode(), addr)
