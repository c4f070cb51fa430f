# dhcpd: the embedded DHCP responder (package dhcpd, verb `qvm dhcpd`).
# Its tests run real DHCP clients (udhcpc, dhclient, dhcpcd) against it in
# network namespaces they make (iproute2); the benchmark compares it with
# dnsmasq under perfdhcp (kea-admin).
APT_PACKAGES += iproute2 udhcpc isc-dhcp-client dhcpcd-base dnsmasq-base kea-admin

.PHONY: bench-dhcp
# bench-dhcp: qvm's responder and dnsmasq, same 1,000 static leases, same
# veth pair, rising perfdhcp rates; the last line is the summary.
bench-dhcp: deps
	$(GO) run ./bench/dhcp
