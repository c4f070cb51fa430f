module github.com/qvm-project/qvm

go 1.26.0

require (
	github.com/google/uuid v1.6.0 // indirect
	github.com/spf13/pflag v1.1.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
