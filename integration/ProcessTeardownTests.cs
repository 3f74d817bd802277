using System.Globalization;
using System.Runtime.InteropServices;
using Sandbox.Linux;

namespace Sandbox.IntegrationTests;

/// <summary>
/// The child that unmaps the CLI's memory after the CLI has exited (ProcessTeardown.HandOff,
/// sandbox_exec.c sbx_defer_teardown), made here in the test host and inspected while it waits for
/// this process to exit; then killed, since the test host goes on. NativeAotCliTests checks that it
/// ends with the CLI.
/// </summary>
[TestFixture]
[Parallelizable(ParallelScope.None)]
public sealed unsafe class ProcessTeardownTests
{
    [Test]
    public void TheChildSharesOurMemoryHoldsOnlyOurPidfdAndBlocksEverySignal()
    {
        // A value in native memory, changed after the clone: a child with a copy of our memory
        // (fork) still sees the old one; one that shares it (CLONE_VM) sees the new one.
        ulong* probe = (ulong*)NativeMemory.Alloc(8);
        *probe = 0x1111_2222_3333_4444;
        int pid = NativeExecutor.DeferTeardown();
        Assert.That(pid, Is.GreaterThan(0), $"sbx_defer_teardown failed: errno {-pid}");
        try
        {
            *probe = 0x5555_6666_7777_8888;
            // One child per process: a second would share the first one's stack.
            Assert.That(NativeExecutor.DeferTeardown(), Is.EqualTo(-114 /* EALREADY */));

            // It closes every fd but our pidfd first thing: a caller reading the CLI's output to
            // its end must not wait for it.
            string[] fds = [];
            Assert.That(HostProcesses.WaitUntil(() => (fds = Descriptors(pid)).Length == 1, TimeSpan.FromSeconds(5)), Is.True,
                $"the child's fds: {string.Join(", ", fds)}");
            Assert.That(fds[0], Is.EqualTo("anon_inode:[pidfd]"));

            // Our signal handlers are .NET's: none may run on the child's stack.
            string status = File.ReadAllText($"/proc/{pid}/status");
            ulong blocked = ulong.Parse(Field(status, "SigBlk"), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            foreach (int signal in new[] { 1, 2, 3, 10, 12, 13, 14, 15, 17, 28 })
                Assert.That((blocked >> (signal - 1)) & 1, Is.EqualTo(1UL), $"signal {signal} is not blocked (SigBlk {blocked:x})");
            Assert.That(Field(status, "State"), Does.StartWith("S"), "it sleeps until we exit");
            Assert.That(Field(status, "Name"), Is.EqualTo("sandbox-exit"), "a name of its own: its command line is ours");

            using var mem = new FileStream($"/proc/{pid}/mem", FileMode.Open, FileAccess.Read);
            mem.Position = (long)probe;
            var bytes = new byte[8];
            mem.ReadExactly(bytes);
            Assert.That(BitConverter.ToUInt64(bytes), Is.EqualTo(0x5555_6666_7777_8888UL), "the child has a copy of our memory, not ours");
        }
        finally
        {
            Tmds.Linux.LibC.kill(pid, 9);
            int waitStatus;
            waitpid(pid, &waitStatus, 0);
            NativeMemory.Free(probe);
        }
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int waitpid(int pid, int* status, int options);

    private static string[] Descriptors(int pid)
    {
        try
        {
            return Directory.GetFileSystemEntries($"/proc/{pid}/fd").Select(fd => new FileInfo(fd).LinkTarget ?? "?").ToArray();
        }
        catch (IOException)
        {
            return ["(gone)"];
        }
    }

    private static string Field(string status, string name) =>
        status.Split('\n').Single(l => l.StartsWith(name + ":", StringComparison.Ordinal))[(name.Length + 1)..].Trim();
}
