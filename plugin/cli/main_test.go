package cli

import (
	"testing"

	"github.com/tabbynet/tabby/datastore/etcdtest"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }
