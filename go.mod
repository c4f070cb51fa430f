module github.com/qvm-project/qvm

go 1.26
