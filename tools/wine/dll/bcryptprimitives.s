# A stand-in bcryptprimitives.dll for Wine 8, which has none (see README.md).
# Go >= 1.22 seeds its random numbers with ProcessPrng from this DLL.
#
#   BOOL ProcessPrng(PBYTE pbData, SIZE_T cbData)
#
# forwards to advapi32's RtlGenRandom (exported as SystemFunction036):
#
#   BOOLEAN SystemFunction036(PVOID RandomBuffer, ULONG RandomBufferLength)
#
# The arguments are already in rcx and rdx (Win64 calling convention).
# The result is widened from BOOLEAN (al) to BOOL (eax) so the caller
# never sees stray upper bits. Buffers of 4 GiB or more would be truncated
# to ULONG; Go never asks for that much at once.

	.text
	.globl	DllMain
DllMain:
	movl	$1, %eax			# TRUE: nothing to set up
	ret

	.globl	ProcessPrng
ProcessPrng:
	subq	$40, %rsp			# 32 bytes of shadow space, 16-byte alignment
	call	*__imp_SystemFunction036(%rip)
	movzbl	%al, %eax
	addq	$40, %rsp
	ret
