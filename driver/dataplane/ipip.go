package dataplane

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
)

// ErrNoIPIP means the kernel cannot make IPIP tunnels.
var ErrNoIPIP = errors.New("IPIP needs the kernel's ipip module, which this kernel does not have")

// ipipProbe is a throwaway tunnel name (15 characters at most).
const ipipProbe = "tabbyipipprobe"

// IPIPSupported reports whether this kernel can carry IPIP: tunl0 exists
// once the ipip module is loaded, and creating a tunnel loads it when it is
// available; the probe tunnel is removed at once.
func (d *Dataplane) IPIPSupported() error {
	if _, err := d.h.LinkByName("tunl0"); err == nil {
		return nil
	}
	probe := &netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: ipipProbe}}
	if err := d.h.LinkAdd(probe); err != nil {
		return fmt.Errorf("%w (%v): use vxlanMode instead of ipipMode, or load the ipip module", ErrNoIPIP, err)
	}
	return d.DeleteLink(ipipProbe)
}
