package cli

import (
	"bytes"
	"testing"

	"github.com/tabbynet/tabby/bgp"
	"github.com/tabbynet/tabby/plugin"
)

func TestNodeStatusPrintsSeed000Layout(t *testing.T) {
	var b bytes.Buffer
	printStatus(&b, &plugin.NodeStatus{IPv4: []bgp.PeerStatus{
		{Address: "192.168.50.11", Type: "node-to-node mesh", State: "up", Since: "2020-09-28", Info: "Established"},
		{Address: "192.168.50.12", Type: "node-to-node mesh", State: "up", Since: "2020-09-28", Info: "Established"},
	}})
	want := `tabby process is running.

IPv4 BGP status
+---------------+-------------------+-------+------------+-------------+
| PEER ADDRESS  |     PEER TYPE     | STATE |   SINCE    |    INFO     |
+---------------+-------------------+-------+------------+-------------+
| 192.168.50.11 | node-to-node mesh | up    | 2020-09-28 | Established |
| 192.168.50.12 | node-to-node mesh | up    | 2020-09-28 | Established |
+---------------+-------------------+-------+------------+-------------+

IPv6 BGP status
No IPv6 peers found.
`
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}
