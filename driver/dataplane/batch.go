package dataplane

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// batchSize bounds the route messages of one sendmsg (about 12 KiB).
const batchSize = 256

// op is one kernel change the table decided: write r, or remove whatever
// tabby route r.Dst has.
type op struct {
	r   Route
	del bool
}

func (o op) String() string {
	if o.del {
		return "remove route " + o.r.Dst.String()
	}
	return "route " + o.r.String()
}

// writeRoutes sends the table's changes. rtnetlink handles each message of
// a buffer in turn and acknowledges each, so a chunk of messages in one
// sendmsg and then their acks costs two syscalls per chunk where one request
// at a time costs two per route. Every change is attempted; the error lists
// the ones that failed. Removing a route that is already gone succeeds.
func (d *Dataplane) writeRoutes(ops []op) error {
	if len(ops) == 0 {
		return nil
	}
	d.rawMu.Lock()
	defer d.rawMu.Unlock()
	var errs []error
	for start := 0; start < len(ops); start += batchSize {
		end := min(start+batchSize, len(ops))
		if err := d.sendRoutes(ops[start:end], &errs); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	return errors.Join(errs...)
}

// encode builds the rtnetlink message for one change.
func encode(o op) (*nl.NetlinkRequest, error) {
	r := o.r
	v4 := r.Dst.Addr().Is4()
	if !o.del {
		if err := r.check(); err != nil {
			return nil, err
		}
	}
	req := nl.NewNetlinkRequest(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE|unix.NLM_F_ACK)
	msg := nl.NewRtMsg() // main table, scope universe, unicast
	if o.del {
		req = nl.NewNetlinkRequest(unix.RTM_DELROUTE, unix.NLM_F_ACK)
		msg = nl.NewRtDelMsg()
		msg.Type = unix.RTN_UNSPEC // whatever tabby route the destination has
	}
	msg.Family = unix.AF_INET6
	if v4 {
		msg.Family = unix.AF_INET
	}
	msg.Dst_len = uint8(r.Dst.Bits())
	msg.Protocol = uint8(RouteProtocol)
	if !o.del {
		switch r.Kind {
		case KindBlackhole:
			msg.Type = unix.RTN_BLACKHOLE
		case KindEndpoint, KindWireGuard:
			if v4 {
				msg.Scope = unix.RT_SCOPE_LINK
			}
		case KindVXLAN, KindIPIP:
			msg.Flags |= unix.RTNH_F_ONLINK
		}
	}
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.RTA_DST, r.Dst.Addr().AsSlice()))
	if !o.del {
		if r.Gw.IsValid() {
			req.AddData(nl.NewRtAttr(unix.RTA_GATEWAY, r.Gw.AsSlice()))
		}
		if r.Link != 0 {
			req.AddData(nl.NewRtAttr(unix.RTA_OIF, nl.Uint32Attr(uint32(r.Link))))
		}
	}
	return req, nil
}

// sendRoutes sends one chunk and collects the per-route errors in errs; its
// own error means the socket failed and the chunk's outcome is unknown.
func (d *Dataplane) sendRoutes(ops []op, errs *[]error) error {
	var buf []byte
	pending := map[uint32]int{}
	for i, o := range ops {
		req, err := encode(o)
		if err != nil {
			*errs = append(*errs, err)
			continue
		}
		buf = append(buf, req.Serialize()...)
		pending[req.Seq] = i
	}
	if len(pending) == 0 {
		return nil
	}
	if err := unix.Sendto(d.raw.Socket.GetFd(), buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	for len(pending) > 0 {
		msgs, _, err := d.raw.Socket.Receive()
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		for _, m := range msgs {
			i, ok := pending[m.Header.Seq]
			if !ok || m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			delete(pending, m.Header.Seq)
			errno := syscall.Errno(-int32(nl.NativeEndian().Uint32(m.Data[:4])))
			if errno != 0 && !(ops[i].del && (errno == unix.ESRCH || errno == unix.ENOENT)) {
				*errs = append(*errs, fmt.Errorf("%v: %w", ops[i], errno))
			}
		}
	}
	return nil
}
