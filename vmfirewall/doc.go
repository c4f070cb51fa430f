// Package vmfirewall is dom0's packet filter for the VM interfaces it
// serves as network backend (vif*): it keeps the VMs from reaching dom0
// itself, from using any source address but their own, and from talking
// to each other, until a netvm VM takes over their networking.
//
// It programs one nftables table, inet qvm, through netlink (no nft
// binary) and owns it alone: nothing else should change it. The table
// exists while at least one VM interface is filtered; Add creates it and
// Remove of the last interface deletes it, leaving nothing behind.
//
//	table inet qvm {
//	    map vifs { type ifname : verdict }          # "vif5.0" : goto vif5.0, one per Add
//	    chain prerouting {                          # priority raw: before conntrack and routing
//	        type filter hook prerouting priority -300; policy accept
//	        iifname "vif*" jump antispoof
//	    }
//	    chain antispoof {
//	        ip6 saddr fe80::/10 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept
//	        iifname vmap @vifs
//	        counter drop                            # a vif nobody added: nothing gets in
//	    }
//	    chain vif5.0 {                              # one VM's own addresses, from its backend's ip key
//	        ip saddr 10.137.0.5 accept
//	        ip6 saddr fd09:24ef:4179::a89:5 accept
//	        counter drop
//	    }
//	    chain input {
//	        type filter hook input priority 0; policy accept
//	        iifname "vif*" jump vm-input
//	    }
//	    chain vm-input {                            # dom0 itself: neighbour discovery only
//	        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept
//	        counter drop
//	    }
//	    chain forward {
//	        type filter hook forward priority 0; policy accept
//	        iifname "vif*" oifname "vif*" counter drop   # VM to VM
//	        oifname "vif*" ct state established,related accept
//	        oifname "vif*" counter drop                  # nothing new into a VM from outside
//	    }
//	}
//
// The base chains accept what is not VM traffic, so dom0's own networking
// and other tables are untouched. Add also sets strict reverse-path
// filtering (net.ipv4.conf.IFACE.rp_filter=1) on the interface, a second,
// routing-based check of IPv4 source addresses; the kernel applies the
// larger of that and net.ipv4.conf.all.rp_filter.
//
// # DHCP
//
// The input chain drops DHCP requests too, and DHCP still works: qvm's
// responder (package dhcpd) reads requests from a packet socket
// (AF_PACKET), which the kernel feeds before the IP layer and netfilter
// see the frame, and sends its replies the same way, past the output hooks.
// Nothing in dom0 listens for VMs on an IP socket.
//
// # Atomicity
//
// All of one interface's objects (its chain, its map element) and the
// table's fixed chains are written in one netlink batch, which the kernel
// applies whole or not at all: a VM interface is never half filtered.
// Add and Remove also take a file lock (Filter.LockPath) around reading
// the table and writing the batch, so that concurrent hotplug scripts of
// different VMs cannot delete the table under each other.
//
// # Growing
//
// Rules of one VM live in that VM's chain, so that later per-VM rules
// (Qubes firewall rules, allowed VM-to-VM traffic, NAT for a netvm) are
// added and removed with the interface, in the same batch.
package vmfirewall
