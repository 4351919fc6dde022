#ifndef XFRMLAB_CNETLINK_SHIM_H
#define XFRMLAB_CNETLINK_SHIM_H
// <netinet/in.h> must come before any <linux/*.h>: linux/libc-compat.h then skips
// its own in6_addr, which would otherwise clash with Glibc's in every importing target.
#include <sys/socket.h>
#include <netinet/in.h>
#include <net/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/if_addr.h>
#include <linux/fib_rules.h>
#include <linux/net_namespace.h>
#include <linux/veth.h>
#include <linux/if_tunnel.h>
#include <linux/xfrm.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <libmnl/libmnl.h>
#endif
