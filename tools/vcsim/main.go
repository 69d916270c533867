// Command vcsim runs VMware's vCenter simulator (github.com/vmware/govmomi/simulator,
// pinned in go.mod) on a given address. snapdeploy's launcher and tests start it when no
// real vCenter is configured. It prints one line, "url=<sdk url>", once it is serving.
//
// For test harnesses it also serves /harness/faults: POST a JSON rule
// {"method": "ReconfigVM_Task", "object_name": "*", "message": "...", "max_count": 1}
// to make matching calls fail, DELETE to clear the rules. /harness/delays takes
// {"method": "PowerOnVM_Task", "delay_ms": 8000, "for_ms": 1000}: calls of that method made
// in the next for_ms hang delay_ms and then do their work (a call that outlives its
// client's timeout, then succeeds). -trace-file records every SOAP request and response,
// so a test can check what a client sent.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
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
	pass := flag.String("password", "", "the only accepted login password (any if empty; "+
		"VCSIM_PASSWORD from the environment is used when not given, keeping it off the command line)")
	delays := flag.String("method-delay", "", "per-method delays in ms: 'CloneVM_Task:200,PowerOnVM_Task:50'")
	trace := flag.String("trace-file", "", "record every SOAP request and response in this file")
	flag.Parse()
	if *pass == "" {
		*pass = os.Getenv("VCSIM_PASSWORD")
	}

	if *trace != "" {
		file, err := os.OpenFile(*trace, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			log.Fatalf("-trace-file: %v", err)
		}
		defer file.Close()
		simulator.TraceFile = redactTrace(file, *pass)
		simulator.Trace = true
	}

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
	mux := http.NewServeMux()
	mux.HandleFunc("/harness/faults", func(w http.ResponseWriter, r *http.Request) {
		faults(model.Service, w, r)
	})
	mux.HandleFunc("/harness/delays", func(w http.ResponseWriter, r *http.Request) {
		delayFor(&model.DelayConfig, w, r)
	})
	model.Service.ServeMux = mux
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

type faultRule struct {
	Method     string  `json:"method"`
	ObjectType string  `json:"object_type"`
	ObjectName string  `json:"object_name"`
	Message    string  `json:"message"`
	MaxCount   int     `json:"max_count"`
	SkipCount  int     `json:"skip_count"`
	DelayMS    int     `json:"delay_ms"`
	Rate       float64 `json:"probability"`
	Fault      string  `json:"fault"`
}

// Faults that every SOAP client knows on every API version (the simulator's own generic
// ones carry a SystemErrorFault that some clients cannot decode).
var faultTypes = map[string]func() types.BaseMethodFault{
	"":                       func() types.BaseMethodFault { return &types.InvalidState{} },
	"invalid_state":          func() types.BaseMethodFault { return &types.InvalidState{} },
	"not_found":              func() types.BaseMethodFault { return &types.NotFound{} },
	"resource_in_use":        func() types.BaseMethodFault { return &types.ResourceInUse{} },
	"insufficient_resources": func() types.BaseMethodFault { return &types.InsufficientResourcesFault{} },
	"task_in_progress":       func() types.BaseMethodFault { return &types.TaskInProgress{} },
}

func faults(service *simulator.Service, w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodDelete:
		service.ClearFaultRules()
	case http.MethodPost:
		var rule faultRule
		if err := json.NewDecoder(r.Body).Decode(&rule); err != nil || rule.Method == "" {
			http.Error(w, "a rule needs at least a method", http.StatusBadRequest)
			return
		}
		makeFault, known := faultTypes[rule.Fault]
		if !known {
			http.Error(w, "unknown fault "+rule.Fault, http.StatusBadRequest)
			return
		}
		orAll := func(s string) string {
			if s == "" {
				return "*"
			}
			return s
		}
		rate := rule.Rate
		if rate == 0 {
			rate = 1
		}
		service.AddFaultRule(&simulator.FaultInjectionRule{
			MethodName: rule.Method, ObjectType: orAll(rule.ObjectType),
			ObjectName: orAll(rule.ObjectName), Probability: rate,
			FaultType: simulator.FaultTypeCustom, Fault: makeFault(), Message: rule.Message,
			MaxCount: rule.MaxCount, SkipCount: rule.SkipCount, Delay: rule.DelayMS,
			Enabled: true,
		})
	default:
		http.Error(w, "POST a rule or DELETE all", http.StatusMethodNotAllowed)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type delayRule struct {
	Method  string `json:"method"`
	DelayMS int    `json:"delay_ms"`
	ForMS   int    `json:"for_ms"`
}

var delaysMu sync.Mutex

// delayFor adds a method delay for a while. The simulator reads MethodDelay without a lock,
// so the map is never changed in place: a new one replaces it.
func delayFor(config *simulator.DelayConfig, w http.ResponseWriter, r *http.Request) {
	var rule delayRule
	if r.Method != http.MethodPost {
		http.Error(w, "POST a rule", http.StatusMethodNotAllowed)
		return
	}
	if err := json.NewDecoder(r.Body).Decode(&rule); err != nil || rule.Method == "" || rule.ForMS <= 0 {
		http.Error(w, "a rule needs a method, delay_ms and for_ms", http.StatusBadRequest)
		return
	}
	set := func(ms int) {
		delaysMu.Lock()
		defer delaysMu.Unlock()
		next := map[string]int{}
		for k, v := range config.MethodDelay {
			next[k] = v
		}
		if ms > 0 {
			next[rule.Method] = ms
		} else {
			delete(next, rule.Method)
		}
		config.MethodDelay = next
	}
	set(rule.DelayMS)
	time.AfterFunc(time.Duration(rule.ForMS)*time.Millisecond, func() { set(0) })
	w.WriteHeader(http.StatusNoContent)
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

// redactTrace returns the file the simulator writes its trace to: a pipe copied line by line
// into out with the login password replaced by "***" (Login requests carry it in their body).
func redactTrace(out *os.File, secret string) *os.File {
	if secret == "" {
		return out
	}
	reader, writer, err := os.Pipe()
	if err != nil {
		log.Fatalf("-trace-file: %v", err)
	}
	go func() {
		lines := bufio.NewReader(reader)
		for {
			line, err := lines.ReadBytes('\n')
			if len(line) > 0 {
				_, _ = out.Write(bytes.ReplaceAll(line, []byte(secret), []byte("***")))
			}
			if err != nil {
				return
			}
		}
	}()
	return writer
}
