// Package secmem holds secrets in memory for the whole module: it wipes
// buffers and (with GOEXPERIMENT=runtimesecret) what a function handling a
// secret left behind, seals secrets in a box that opens into locked
// scratch memory for one use, checks the locked-memory limit before
// anything is locked, and keeps the process out of core dumps.
//
// It is one package because these are one mechanism: the vault's keys and
// a Tang server's private scalars are held the same way, share one pool of
// locked buffers and one memlock budget, and fail with one ErrMemlock.
package secmem
