// KVM ioctl numbers and structs for Swift. The _IO* macros cannot be imported, so each request
// number is re-exported as a constant. No logic lives here.
#ifndef CKVM_H
#define CKVM_H
#include <linux/kvm.h>
#include <sys/ioctl.h>

static const unsigned long CKVM_GET_API_VERSION = KVM_GET_API_VERSION;
static const unsigned long CKVM_CREATE_VM = KVM_CREATE_VM;
static const unsigned long CKVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
static const unsigned long CKVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;

#endif
