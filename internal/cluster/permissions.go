package cluster

import "github.com/nats-io/nats-server/v2/server"

// NodePermissions are the least NATS permissions node needs on stream:
// it may publish only on its own subject, use only its own durable
// consumer, and read the stream; it cannot publish as another node, nor
// delete or purge the stream. docs/cluster.md shows the same in nats-server
// configuration syntax. (Creating the stream is allowed so that the first
// node can set it up; an operator who creates it beforehand may drop
// $JS.API.STREAM.CREATE and $JS.API.STREAM.UPDATE.)
func NodePermissions(node, stream string) *server.Permissions {
	durable := DurableName(node)
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			Subject(node),
			"$JS.API.INFO",
			"$JS.API.STREAM.INFO." + stream,
			"$JS.API.STREAM.CREATE." + stream,
			"$JS.API.STREAM.UPDATE." + stream,
			"$JS.API.STREAM.MSG.GET." + stream,
			"$JS.API.DIRECT.GET." + stream + ".>",
			"$JS.API.CONSUMER.CREATE." + stream + "." + durable + ".>",
			"$JS.API.CONSUMER.INFO." + stream + "." + durable,
			"$JS.API.CONSUMER.MSG.NEXT." + stream + "." + durable,
			"$JS.ACK." + stream + "." + durable + ".>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}
}
