// Package ami is pbxguard's own Asterisk Manager Interface client.
//
// Reader splits an AMI byte stream into Messages and survives any input
// (split reads, bare LF, both forms of command output, garbage, oversized
// messages). Client logs in (plain or MD5 challenge, over TCP or TLS),
// correlates actions and responses by ActionID, collects event lists,
// keeps the session alive with Ping and reconnects with backoff; its event
// channels never block the connection (the oldest event is dropped and
// counted when a consumer falls behind). SecurityEvent turns Asterisk's
// security events into event.Event for the jails.
//
// Typical use:
//
//	c, err := ami.Dial(ctx, ami.Config{Addr: "127.0.0.1:5038", Username: "pbxguard", Secret: secret, UseMD5: true})
//	if err != nil {
//		return err // says what to check: address, TLS, credentials, manager.conf permit/deny
//	}
//	defer c.Close()
//	sec := c.Subscribe(1024, ami.IsSecurity)
//	go func() {
//		var ev event.Event
//		for m := range sec.C() {
//			if ami.SecurityEvent(m, &ev) {
//				jail.Add(ev)
//			}
//		}
//	}()
//	for m := range c.Events() { // all events, with pbxguard.Disconnected / pbxguard.Reconnected markers
//		tracker.Handle(m, time.Now())
//	}
//
// The manager.conf user needs read = system,call,security (plus cdr for
// Cdr events) and, for the responses and the live view, write =
// system,call: Asterisk runs an action when the session's write classes
// share one class with the action's (main/manager.c: Hangup and
// PJSIPHangup system+call, DBPut/DBDel/Filter/PJSIPShowContacts system,
// DBGet and CoreShowChannels system+reporting, Getvar call+reporting,
// Command command — which pbxguard does not use). ami/amitest checks
// privileges the same way.
package ami
