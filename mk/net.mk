# Routed VM networking in dom0 (package vifroute): tests build network
# namespaces with iproute2 and ping across them.
APT_PACKAGES += iproute2 iputils-ping
