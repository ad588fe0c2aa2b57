module example.com/envscan

go 1.26
