using System.Runtime.InteropServices;
using System.Text;

namespace Sandbox.Linux;

/// <summary>
/// Native memory for one spawn: every string, array and structure the executor reads, allocated
/// before clone and freed only after the sandbox's PID 1 has been reaped (the child shares our
/// address space: CLONE_VM).
/// </summary>
internal sealed unsafe class NativeArena : IDisposable
{
    private readonly List<IntPtr> _blocks = new();
    private readonly ChildStackPool _stacks;
    private IntPtr _childStack;
    private long _childStackBytes;

    public NativeArena(ChildStackPool? stacks = null) => _stacks = stacks ?? ChildStackPool.Shared;

    public byte* String(string? value)
    {
        if (value is null)
            return null;
        if (value.Contains('\0'))
            throw new ArgumentException($"a NUL character cannot be passed to the kernel: {value.Replace("\0", "\\0")}");
        int length = Encoding.UTF8.GetByteCount(value);
        byte* p = (byte*)Allocate(length + 1, zero: false);
        Encoding.UTF8.GetBytes(value, new Span<byte>(p, length));
        p[length] = 0;
        return p;
    }

    /// <summary>A NULL-terminated array of C strings (argv, envp).</summary>
    public byte** StringArray(IReadOnlyList<string> values)
    {
        byte** array = (byte**)Allocate((values.Count + 1) * sizeof(byte*), zero: true);
        for (int i = 0; i < values.Count; i++)
            array[i] = String(values[i]);
        return array;
    }

    public T* Array<T>(int count) where T : unmanaged => (T*)Allocate(Math.Max(1, count) * sizeof(T), zero: true);

    public void* Allocate(long bytes, bool zero)
    {
        void* p = zero ? NativeMemory.AllocZeroed((nuint)bytes) : NativeMemory.Alloc((nuint)bytes);
        _blocks.Add((IntPtr)p);
        return p;
    }

    /// <summary>
    /// The stacks of the executor's CLONE_VM children: from <see cref="ChildStackPool"/>, handed back
    /// to it (not freed) when the arena is disposed. One per arena.
    /// </summary>
    public byte* ChildStack(long bytes)
    {
        if (_childStack != IntPtr.Zero)
            throw new InvalidOperationException("this arena has a child stack already");
        _childStack = (IntPtr)_stacks.Rent(bytes);
        _childStackBytes = bytes;
        return (byte*)_childStack;
    }

    public void Dispose()
    {
        foreach (IntPtr block in _blocks)
            NativeMemory.Free((void*)block);
        _blocks.Clear();
        if (_childStack != IntPtr.Zero)
            _stacks.Return((void*)_childStack, _childStackBytes);
        _childStack = IntPtr.Zero;
    }
}

/// <summary>
/// One spare child stack per process, kept for the next spawn instead of freed. A stack is half a
/// MiB, so glibc's malloc maps it on its own and its free(3) is a munmap(2) (mallopt(3),
/// M_MMAP_THRESHOLD), made at the end of every run, on the way to the CLI's exit: 13 µs median, 39
/// at the 90th percentile (perf syscall tracepoints, 100 warm runs). An unmap flushes the TLB of
/// every CPU that may hold the address space's translations, and the CLI shares it with its
/// teardown child (sandbox_exec.c, sbx_defer_teardown). A process that starts many sandboxes (the
/// MSBuild task, <c>sandbox test</c>) also finds the stack's pages already faulted in. The stack is
/// handed back only when the arena is disposed, once no child runs on it (<see cref="NativeArena"/>).
/// </summary>
internal sealed unsafe class ChildStackPool
{
    public static readonly ChildStackPool Shared = new();

    private readonly Lock _lock = new();
    private IntPtr _spare;
    private long _spareBytes;

    /// <summary>The spare if it has <paramref name="bytes"/>, else new memory (uninitialised, as a stack may be).</summary>
    public void* Rent(long bytes)
    {
        lock (_lock)
        {
            if (_spare != IntPtr.Zero && _spareBytes == bytes)
            {
                void* kept = (void*)_spare;
                _spare = IntPtr.Zero;
                return kept;
            }
        }
        return NativeMemory.Alloc((nuint)bytes);
    }

    /// <summary>Keeps <paramref name="stack"/> as the spare when there is none, else frees it.</summary>
    public void Return(void* stack, long bytes)
    {
        lock (_lock)
        {
            if (_spare == IntPtr.Zero)
            {
                _spare = (IntPtr)stack;
                _spareBytes = bytes;
                return;
            }
        }
        NativeMemory.Free(stack);
    }
}
