package plugin

import (
	"time"

	"github.com/tabbynet/tabby/driver/dataplane"
)

// fullRuleCheck is how often the rules are looked at even when the
// ruleset generation says nothing changed (Felix refreshes iptables every
// 90 s).
const fullRuleCheck = time.Minute

// ruleCheck spares repairRules the dozen iptables and nft processes of a
// look while nothing changed: the kernel's nftables ruleset generation
// moves with every change to any table, iptables-nft's rules included
// (with iptables-legacy it does not, and every tick looks). Checking every
// 3 s was most of an idle daemon's CPU (0.5 % of a core), what kept 200
// daemons from one 2-core machine.
type ruleCheck struct {
	legacy bool
	gen    uint32
	at     time.Time // the last clean look; zero: none yet
}

// due reads the generation and says whether to look; a failed read looks.
func (c *ruleCheck) due(now time.Time) (uint32, bool) {
	gen, err := dataplane.RulesetGeneration(0)
	if err != nil || c.legacy || c.at.IsZero() || gen != c.gen || now.Sub(c.at) >= fullRuleCheck {
		return gen, true
	}
	return gen, false
}

// done records a clean look at generation gen (read before it: a change
// made meanwhile, the look's own repairs included, makes the next due).
func (c *ruleCheck) done(gen uint32, now time.Time) { c.gen, c.at = gen, now }
