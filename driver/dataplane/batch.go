package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// batchSize bounds the route messages of one sendmsg (about 12 KiB).
const batchSize = 256

// ReplaceViaBatch installs `dst[i] via gw[i] proto 77` for every i. rtnetlink
// handles each message of a buffer in turn and acknowledges each, so sending
// a chunk of messages in one sendmsg and then reading their acks costs two
// syscalls per chunk where one request at a time costs two per route. Every
// route is attempted; the error lists the ones that failed.
func (d *Dataplane) ReplaceViaBatch(dst []netip.Prefix, gw []netip.Addr) error {
	if len(dst) != len(gw) {
		return fmt.Errorf("ReplaceViaBatch: %d destinations, %d gateways", len(dst), len(gw))
	}
	d.rawMu.Lock()
	defer d.rawMu.Unlock()
	var errs []error
	for start := 0; start < len(dst); start += batchSize {
		end := min(start+batchSize, len(dst))
		if err := d.sendRoutes(dst[start:end], gw[start:end], &errs); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	return errors.Join(errs...)
}

// sendRoutes sends one chunk and collects the per-route errors in errs; its
// own error means the socket failed and the chunk's outcome is unknown.
func (d *Dataplane) sendRoutes(dst []netip.Prefix, gw []netip.Addr, errs *[]error) error {
	var buf []byte
	pending := map[uint32]int{}
	for i := range dst {
		if !dst[i].IsValid() || dst[i].Addr().Is4() != gw[i].Is4() || gw[i].Is4In6() {
			*errs = append(*errs, fmt.Errorf("route %s via %s: destination and gateway must be of one family", dst[i], gw[i]))
			continue
		}
		req := nl.NewNetlinkRequest(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE|unix.NLM_F_ACK)
		msg := nl.NewRtMsg()
		msg.Family = unix.AF_INET
		if gw[i].Is6() {
			msg.Family = unix.AF_INET6
		}
		msg.Dst_len = uint8(dst[i].Bits())
		msg.Protocol = uint8(RouteProtocol)
		req.AddData(msg)
		req.AddData(nl.NewRtAttr(unix.RTA_DST, dst[i].Addr().AsSlice()))
		req.AddData(nl.NewRtAttr(unix.RTA_GATEWAY, gw[i].AsSlice()))
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
			if errno := int32(nl.NativeEndian().Uint32(m.Data[:4])); errno != 0 {
				*errs = append(*errs, fmt.Errorf("route %s via %s: %w", dst[i], gw[i], syscall.Errno(-errno)))
			}
		}
	}
	return nil
}
