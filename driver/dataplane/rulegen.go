package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RulesetGeneration returns the nftables ruleset generation of the
// network namespace ns (0: the daemon's own, the host's). The
// kernel moves it on with every change to any table, iptables-nft's
// rules included, so a loop that checks its rules can skip the check
// while the generation stands still: one netlink request instead of a
// dozen iptables and nft processes.
func RulesetGeneration(ns netns.NsHandle) (uint32, error) {
	var cfg *netlink.Config
	if ns > 0 {
		cfg = &netlink.Config{NetNS: int(ns)}
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return 0, fmt.Errorf("nftables generation: %w", err)
	}
	defer c.Close()
	req := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0}, // nfgenmsg
	}
	msgs, err := c.Execute(req)
	if err != nil {
		return 0, fmt.Errorf("nftables generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, fmt.Errorf("nftables generation: %w", err)
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, errors.New("nftables generation: not in the kernel's answer")
}

// IPTablesOnNFTables tells whether the iptables tabby runs keeps its rules
// in nftables (iptables-nft, Debian's default), where RulesetGeneration
// sees their changes; iptables-legacy's it does not.
func IPTablesOnNFTables() bool {
	out, err := exec.Command("iptables", "-V").Output()
	return err == nil && strings.Contains(string(out), "nf_tables")
}
