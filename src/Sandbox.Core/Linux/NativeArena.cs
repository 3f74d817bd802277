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

    public void Dispose()
    {
        foreach (IntPtr block in _blocks)
            NativeMemory.Free((void*)block);
        _blocks.Clear();
    }
}
