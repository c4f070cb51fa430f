package vmfirewall

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// skeleton is the table and what every VM interface's rules hang on.
type skeleton struct {
	table *nftables.Table
	vifs  *nftables.Set
}

// addSkeleton queues the table, the map and the fixed chains with their
// rules. Existing ones are kept and their rules rewritten (flushed and
// added again in the same batch, so that the packet path never sees a
// chain half written): running it again changes nothing.
func addSkeleton(c *nftables.Conn) (skeleton, error) {
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: TableName})
	vifs := &nftables.Set{Table: t, Name: VifMap, IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict}
	if err := c.AddSet(vifs, nil); err != nil {
		return skeleton{}, fmt.Errorf("map %s: %w", VifMap, err)
	}
	accept := nftables.ChainPolicyAccept
	base := func(name string, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Table: t, Name: name, Type: nftables.ChainTypeFilter, Hooknum: hook, Priority: prio, Policy: &accept})
	}
	regular := func(name string) *nftables.Chain { return c.AddChain(&nftables.Chain{Table: t, Name: name}) }
	chains := []struct {
		chain *nftables.Chain
		rules [][]expr.Any
	}{
		// Raw priority: spoofed packets go before conntrack sees them.
		{base(chainPrerouting, nftables.ChainHookPrerouting, nftables.ChainPriorityRaw), [][]expr.Any{
			cat(ifPrefix(expr.MetaKeyIIFNAME), verdict(expr.VerdictJump, chainAntispoof)),
		}},
		{regular(chainAntispoof), [][]expr.Any{
			// Neighbour discovery from the VM's link-local address:
			// its IPv6 stack needs it to find the gateway, and the
			// kernel never forwards link-local sources.
			cat(neighbourDiscovery(), linkLocalSource(), verdict(expr.VerdictAccept, "")),
			{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
				&expr.Lookup{SourceRegister: 1, SetName: VifMap, SetID: vifs.ID, IsDestRegSet: true, DestRegister: 0}},
			cat(counter(), verdict(expr.VerdictDrop, "")),
		}},
		{base(chainInput, nftables.ChainHookInput, nftables.ChainPriorityFilter), [][]expr.Any{
			cat(ifPrefix(expr.MetaKeyIIFNAME), verdict(expr.VerdictJump, chainVMInput)),
		}},
		{regular(chainVMInput), [][]expr.Any{
			cat(neighbourDiscovery(), verdict(expr.VerdictAccept, "")),
			cat(counter(), verdict(expr.VerdictDrop, "")),
		}},
		{base(chainForward, nftables.ChainHookForward, nftables.ChainPriorityFilter), [][]expr.Any{
			cat(ifPrefix(expr.MetaKeyIIFNAME), ifPrefix(expr.MetaKeyOIFNAME), counter(), verdict(expr.VerdictDrop, "")),
			cat(ifPrefix(expr.MetaKeyOIFNAME), ctEstablished(), verdict(expr.VerdictAccept, "")),
			cat(ifPrefix(expr.MetaKeyOIFNAME), counter(), verdict(expr.VerdictDrop, "")),
		}},
	}
	for _, ch := range chains {
		c.FlushChain(ch.chain)
		for _, r := range ch.rules {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch.chain, Exprs: r})
		}
	}
	return skeleton{table: t, vifs: vifs}, nil
}

// vifRules are one VM interface's chain: its own addresses pass, the rest
// is dropped.
func vifRules(addrs []netip.Addr) [][]expr.Any {
	var rules [][]expr.Any
	for _, a := range addrs {
		rules = append(rules, cat(sourceIs(a), verdict(expr.VerdictAccept, "")))
	}
	return append(rules, cat(counter(), verdict(expr.VerdictDrop, "")))
}

// vifElement sends the interface's packets to its chain.
func vifElement(ifname string) nftables.SetElement {
	return nftables.SetElement{Key: ifnameKey(ifname), VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: ifname}}
}

// ifnameKey is an interface name as meta iifname loads it: IFNAMSIZ bytes,
// zero padded.
func ifnameKey(name string) []byte {
	k := make([]byte, unix.IFNAMSIZ)
	copy(k, name)
	return k
}

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// ifPrefix matches an interface name starting with IfacePrefix (nft's
// iifname "vif*": the comparison covers only the prefix's bytes).
func ifPrefix(key expr.MetaKey) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(IfacePrefix)},
	}
}

func nfproto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

// sourceIs matches packets of a's family with source address a.
func sourceIs(a netip.Addr) []expr.Any {
	if a.Is4() {
		return cat(nfproto(unix.NFPROTO_IPV4), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
		})
	}
	return cat(nfproto(unix.NFPROTO_IPV6), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
	})
}

// neighbourDiscovery matches IPv6 neighbour solicitations and
// advertisements that have not crossed a router (hop limit 255).
func neighbourDiscovery() []expr.Any {
	return cat(nfproto(unix.NFPROTO_IPV6), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{135}, ToData: []byte{136}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 7, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{255}},
	})
}

// linkLocalSource matches an IPv6 source in fe80::/10 (after an nfproto
// ipv6 match).
func linkLocalSource() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 2},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 2, Mask: []byte{0xff, 0xc0}, Xor: []byte{0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0xfe, 0x80}},
	}
}

// ctEstablished matches ct state established,related.
func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

func counter() []expr.Any { return []expr.Any{&expr.Counter{}} }

func verdict(kind expr.VerdictKind, chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: kind, Chain: chain}}
}
