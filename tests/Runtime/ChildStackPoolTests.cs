using Sandbox.Linux;

namespace Sandbox.Tests.Runtime;

/// <summary>
/// The executor's child stacks are kept for the next spawn (<see cref="ChildStackPool"/>): the
/// end of a run then makes no munmap(2).
/// </summary>
public unsafe class ChildStackPoolTests
{
    private const long Bytes = 512 * 1024;

    [Test]
    public void AReturnedStackIsTheNextOneOfItsSize()
    {
        var pool = new ChildStackPool();
        void* first = pool.Rent(Bytes);
        pool.Return(first, Bytes);
        void* second = pool.Rent(Bytes);
        Assert.That((IntPtr)second, Is.EqualTo((IntPtr)first));
        void* third = pool.Rent(Bytes);
        Assert.That((IntPtr)third, Is.Not.EqualTo((IntPtr)first), "the spare was handed out once only");
        pool.Return(second, Bytes);
        pool.Return(third, Bytes);
    }

    [Test]
    public void AStackOfAnotherSizeIsNotHandedOut()
    {
        var pool = new ChildStackPool();
        void* small = pool.Rent(64 * 1024);
        pool.Return(small, 64 * 1024);
        void* large = pool.Rent(Bytes);
        Assert.That((IntPtr)large, Is.Not.EqualTo((IntPtr)small));
        // The spare is still the small one: the large one is freed on its return.
        pool.Return(large, Bytes);
        void* again = pool.Rent(64 * 1024);
        Assert.That((IntPtr)again, Is.EqualTo((IntPtr)small));
        pool.Return(again, 64 * 1024);
    }

    [Test]
    public void AnArenaHandsItsChildStackBackWhenDisposed()
    {
        var pool = new ChildStackPool();
        byte* stack;
        using (var arena = new NativeArena(pool))
        {
            stack = arena.ChildStack(Bytes);
            Assert.Throws<InvalidOperationException>(() => arena.ChildStack(Bytes));
            stack[Bytes - 1] = 2;
        }
        byte* next = (byte*)pool.Rent(Bytes);
        Assert.That((IntPtr)next, Is.EqualTo((IntPtr)stack));
        Assert.That(next[Bytes - 1], Is.EqualTo(2), "handed back, not freed");
        pool.Return(next, Bytes);
    }

    [Test]
    public void ConcurrentSpawnsNeverShareAStack()
    {
        // Sandboxes may start on several threads of one process (SandboxRunner): a stack in use by
        // one child must never be handed to another.
        var pool = new ChildStackPool();
        var inUse = new System.Collections.Concurrent.ConcurrentDictionary<IntPtr, int>();
        int shared = 0;
        Parallel.For(0, 8, _ =>
        {
            for (int i = 0; i < 2000; i++)
            {
                IntPtr stack = (IntPtr)pool.Rent(Bytes);
                if (!inUse.TryAdd(stack, 0))
                    Interlocked.Increment(ref shared);
                Thread.SpinWait(50);
                inUse.TryRemove(stack, out int _);
                pool.Return((void*)stack, Bytes);
            }
        });
        Assert.That(shared, Is.Zero);
        pool.Return(pool.Rent(Bytes), Bytes);
    }
}
