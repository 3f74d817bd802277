using Sandbox.Cgroups;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Cgroups;

/// <summary>
/// Reaches SandboxCgroup's protected helpers. Never instantiated: NewName also tells the tests the
/// name the next sandbox cgroup will get, so they can pre-create the files a real cgroupfs would
/// provide (the code opens them O_WRONLY without O_CREAT).
/// </summary>
internal sealed class CgroupHelpers : SandboxCgroup
{
    private CgroupHelpers()
    {
    }

    public override IReadOnlyList<string> Paths => throw new NotSupportedException();

    public override string Version => throw new NotSupportedException();

    public override CgroupView View => throw new NotSupportedException();

    /// <summary>The name the next CgroupV1/CgroupV2.Create for <paramref name="pid"/> will use (tests run one at a time).</summary>
    public static string NextName(int pid)
    {
        string current = NewName(pid);
        int n = int.Parse(current[(current.LastIndexOf('-') + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        return $"sandbox-{pid}-{n + 1}";
    }

    public static void CallWrite(string file, string value) => Write(file, value);

    public static int? CallOwnerOf(string name) => OwnerOf(name);

    public static string? CallReadOrNull(string file) => ReadOrNull(file);

    public static void CallRemoveDirectory(string path) => RemoveDirectory(path);

    public static (int Major, int Minor) CallDeviceNumbers(string device) => DeviceNumbers(device);

    public override void AddProcess(int pid) => throw new NotSupportedException();

    public override void Kill() => throw new NotSupportedException();

    public override ResourceUsage ReadUsage() => throw new NotSupportedException();

    public override void Dispose()
    {
    }
}

/// <summary>What a plain file holds after several WriteFileOnce calls: each opens O_WRONLY without O_TRUNC, so it overwrites from offset 0.</summary>
internal static class PlainFile
{
    public static string AfterWrites(string initial, params string[] writes)
    {
        char[] content = initial.ToCharArray();
        foreach (string w in writes)
        {
            if (w.Length > content.Length)
                Array.Resize(ref content, w.Length);
            w.CopyTo(0, content, 0, w.Length);
        }
        return new string(content);
    }
}

/// <summary>Tests that each get a fresh <see cref="V2Host"/> (NUnit runs this SetUp before a derived class's).</summary>
public abstract class V2HostTests
{
    private protected V2Host _host = null!;

    [SetUp]
    public void CreateHost() => _host = new V2Host();

    [TearDown]
    public void DisposeHost() => _host.Dispose();
}

/// <summary>
/// A fake cgroup v2 host: a cgroupfs tree of plain directories and files (with cgroup.controllers at
/// the root, as on a unified hierarchy), a /proc/self/cgroup file, and delegation decided by a set of
/// "writable" paths instead of access(2).
/// </summary>
internal sealed class V2Host : IDisposable
{
    public const int Pid = 4242;
    public const string AllControllers = "cpuset cpu io memory hugetlb pids rdma misc";

    private readonly TempDirectory _dir = new();
    private readonly HashSet<string> _writable = new(StringComparer.Ordinal);

    public V2Host(string own = "/user.slice/job")
    {
        Root = _dir.CreateDirectory("sys", "fs", "cgroup");
        File.WriteAllText(Path.Combine(Root, "cgroup.controllers"), AllControllers + "\n");
        File.WriteAllText(Path.Combine(Root, "cgroup.subtree_control"), "cpu io memory pids\n");
        File.WriteAllText(Path.Combine(Root, "cgroup.procs"), "1\n");
        ProcSelfCgroup = _dir.Combine("proc-self-cgroup");
        MountInfo = _dir.Combine("proc-self-mountinfo");
        File.WriteAllText(MountInfo, "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n");
        SetOwn(own);
    }

    public string Root { get; }

    public string ProcSelfCgroup { get; }

    public string MountInfo { get; }

    /// <summary>Paths IsWritable was asked about, in order.</summary>
    public List<string> Asked { get; } = [];

    public CgroupHost Host => new(ProcSelfCgroup, MountInfo, Root, IsWritable, Pid) { ProcessExists = pid => pid == Pid };

    public string Dir(string cgroupPath) => Root + cgroupPath;

    public void SetOwn(string cgroupPath) => File.WriteAllText(ProcSelfCgroup, $"0::{cgroupPath}\n");

    /// <summary>A cgroup directory with the interface files the probe reads.</summary>
    public string AddCgroup(string cgroupPath, string controllers = "cpu io memory pids", string procs = "", string subtreeControl = "")
    {
        string dir = Dir(cgroupPath);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "cgroup.controllers"), controllers.Length == 0 ? "" : controllers + "\n");
        File.WriteAllText(Path.Combine(dir, "cgroup.procs"), procs);
        File.WriteAllText(Path.Combine(dir, "cgroup.subtree_control"), subtreeControl);
        return dir;
    }

    /// <summary>What systemd's Delegate=yes chowns: the directory, cgroup.procs and cgroup.subtree_control.</summary>
    public void Delegate(string dir)
    {
        _writable.Add(dir);
        _writable.Add(Path.Combine(dir, "cgroup.procs"));
        _writable.Add(Path.Combine(dir, "cgroup.subtree_control"));
    }

    public void MakeWritable(string path) => _writable.Add(path);

    private bool IsWritable(string path)
    {
        Asked.Add(path);
        return _writable.Contains(path);
    }

    public void Dispose() => _dir.Dispose();
}

/// <summary>
/// A fake cgroup v1 host: a tmpfs-like root (no cgroup.controllers), one "mount point" directory per
/// hierarchy, a mountinfo that names them, and /proc/self/cgroup placing the process in /ci.
/// </summary>
internal sealed class V1Host : IDisposable
{
    public const int Pid = 4343;

    private readonly TempDirectory _dir = new();
    private readonly HashSet<string> _writable = new(StringComparer.Ordinal);

    public V1Host(bool withBlkio = false, string memoryMountName = "memory")
    {
        Root = _dir.CreateDirectory("sys", "fs", "cgroup");
        MemoryMount = _dir.CreateDirectory("sys", "fs", "cgroup", memoryMountName);
        PidsMount = _dir.CreateDirectory("sys", "fs", "cgroup", "pids");
        CpuMount = _dir.CreateDirectory("sys", "fs", "cgroup", "cpu,cpuacct");
        BlkioMount = _dir.CreateDirectory("sys", "fs", "cgroup", "blkio");
        _dir.CreateDirectory("sys", "fs", "cgroup", "unified");
        _dir.CreateDirectory("sys", "fs", "cgroup", "systemd");
        MemoryCi = Directory.CreateDirectory(Path.Combine(MemoryMount, "ci")).FullName;
        PidsCi = Directory.CreateDirectory(Path.Combine(PidsMount, "ci")).FullName;
        CpuCi = Directory.CreateDirectory(Path.Combine(CpuMount, "ci")).FullName;
        BlkioCi = Directory.CreateDirectory(Path.Combine(BlkioMount, "ci")).FullName;

        string escapedMemory = MemoryMount.Replace(" ", "\\040", StringComparison.Ordinal);
        var mountinfo = new List<string>
        {
            "22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw",
            $"25 22 0:22 / {Root} ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755,inode64",
            $"26 25 0:23 / {Root}/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate",
            $"27 25 0:24 / {Root}/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd",
            $"30 25 0:27 / {escapedMemory} rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory",
            $"31 25 0:28 / {PidsMount} rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,pids",
            $"32 25 0:29 / {CpuMount} rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct",
        };
        var own = new List<string>
        {
            "5:memory:/ci",
            "4:pids:/ci",
            "3:cpu,cpuacct:/ci",
        };
        if (withBlkio)
        {
            mountinfo.Add($"33 25 0:30 / {BlkioMount} rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,blkio");
            own.Add("6:blkio:/ci");
        }
        own.Add("1:name=systemd:/user.slice/ci");
        own.Add("0::/user.slice/ci");
        MountInfo = _dir.Combine("proc-self-mountinfo");
        File.WriteAllLines(MountInfo, mountinfo);
        ProcSelfCgroup = _dir.Combine("proc-self-cgroup");
        File.WriteAllLines(ProcSelfCgroup, own);
    }

    public string Root { get; }

    public string MemoryMount { get; }

    public string PidsMount { get; }

    public string CpuMount { get; }

    public string BlkioMount { get; }

    public string MemoryCi { get; }

    public string PidsCi { get; }

    public string CpuCi { get; }

    public string BlkioCi { get; }

    public string MountInfo { get; }

    public string ProcSelfCgroup { get; }

    public CgroupHost Host => new(ProcSelfCgroup, MountInfo, Root, _writable.Contains, Pid) { ProcessExists = pid => pid == Pid };

    public void MakeWritable(params string[] dirs) => _writable.UnionWith(dirs);

    public void MakeAllWritable() => MakeWritable(MemoryCi, PidsCi, CpuCi, BlkioCi);

    public void WriteMountInfo(params string[] lines) => File.WriteAllLines(MountInfo, lines);

    public void WriteProcSelfCgroup(params string[] lines) => File.WriteAllLines(ProcSelfCgroup, lines);

    public void Dispose() => _dir.Dispose();
}
