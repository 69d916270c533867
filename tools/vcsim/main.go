// Command vcsim runs VMware's vCenter simulator (github.com/vmware/govmomi/simulator,
// pinned in go.mod) on a given address. snapdeploy's launcher and tests start it when no
// real vCenter is configured. It prints one line, "url=<sdk url>", once it is serving.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	model := simulator.VPX()
	flag.IntVar(&model.Datacenter, "dc", model.Datacenter, "number of datacenters")
	flag.IntVar(&model.Cluster, "cluster", model.Cluster, "number of clusters")
	flag.IntVar(&model.ClusterHost, "host", model.ClusterHost, "number of hosts per cluster")
	flag.IntVar(&model.Host, "standalone-host", model.Host, "number of standalone hosts")
	flag.IntVar(&model.Datastore, "ds", model.Datastore, "number of shared datastores")
	flag.IntVar(&model.Machine, "vm", model.Machine, "number of VMs per resource pool")
	flag.IntVar(&model.Portgroup, "pg", model.Portgroup, "number of distributed port groups")
	listen := flag.String("l", "127.0.0.1:8989", "listen address")
	useTLS := flag.Bool("tls", true, "serve HTTPS with a self-signed certificate")
	user := flag.String("username", "", "the only accepted login user (any if empty)")
	pass := flag.String("password", "", "the only accepted login password (any if empty)")
	delays := flag.String("method-delay", "", "per-method delays in ms: 'CloneVM_Task:200,PowerOnVM_Task:50'")
	flag.Parse()

	if *delays != "" {
		byMethod, err := parseDelays(*delays)
		if err != nil {
			log.Fatalf("-method-delay: %v", err)
		}
		model.DelayConfig.MethodDelay = byMethod
		simulator.TaskDelay.MethodDelay = byMethod
	}
	if err := model.Create(); err != nil {
		log.Fatalf("creating the inventory: %v", err)
	}
	model.Service.Listen = &url.URL{Host: *listen}
	if *user != "" {
		model.Service.Listen.User = url.UserPassword(*user, *pass)
	}
	if *useTLS {
		model.Service.TLS = new(tls.Config)
	}
	server := model.Service.NewServer()
	sdk := *server.URL
	sdk.User = nil
	fmt.Printf("url=%s\n", sdk.String())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	server.Close()
	model.Remove()
}

func parseDelays(spec string) (map[string]int, error) {
	byMethod := map[string]int{}
	for _, item := range strings.Split(spec, ",") {
		name, ms, ok := strings.Cut(strings.TrimSpace(item), ":")
		if !ok {
			return nil, fmt.Errorf("%q is not method:milliseconds", item)
		}
		n, err := strconv.Atoi(ms)
		if err != nil {
			return nil, fmt.Errorf("%q: %v", item, err)
		}
		byMethod[name] = n
	}
	return byMethod, nil
}
