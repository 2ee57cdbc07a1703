module github.com/sealproxy/sealproxy

go 1.27

toolchain go1.27.3

require (
	filippo.io/nistec v0.0.4
	github.com/BurntSushi/toml v1.6.0
	github.com/ThalesIgnite/crypto11 v1.2.5
	github.com/awnumar/memguard v0.23.0
	github.com/coreos/go-systemd/v22 v22.7.0
	github.com/go-jose/go-jose/v4 v4.1.9
	github.com/google/certtostore v1.0.7
	github.com/landlock-lsm/go-landlock v0.11.0
	github.com/miekg/pkcs11 v1.0.3-0.20190429190417-a667d056470f
	github.com/prometheus/client_golang v1.25.0
	github.com/rogpeppe/go-internal v1.16.0
	golang.org/x/crypto v0.59.0
	golang.org/x/sys v0.50.0
)

require (
	github.com/StackExchange/wmi v1.2.1 // indirect
	github.com/awnumar/memcall v0.4.0 // indirect
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/go-ole/go-ole v1.3.0 // indirect
	github.com/google/deck v1.1.0 // indirect
	github.com/kylelemons/godebug v1.1.0 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/pkg/errors v0.8.1 // indirect
	github.com/prometheus/client_model v0.6.3 // indirect
	github.com/prometheus/common v0.72.0 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	github.com/thales-e-security/pool v0.0.2 // indirect
	golang.org/x/tools v0.26.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
	kernel.org/pub/linux/libs/security/libcap/psx v1.2.77 // indirect
)
