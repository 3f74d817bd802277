using Sandbox.Linux;
using Sandbox.Diagnostics;

namespace Sandbox.IntegrationTests.Images;

/// <summary>
/// The same image (made by umoci and skopeo: ci/make-test-images) under each storage driver, forced
/// with --storage-driver: the deleted file must be absent, the opaque directory must hold only the
/// upper layer's entries, the root writable (or not, with --read-only), writes gone after the run,
/// and, for copy, nothing left in the store. Auto must pick kernel overlay on a host where it works.
/// </summary>
[TestFixture]
[Parallelizable(ParallelScope.None)]
public sealed class StorageDriverTests
{
    private const string Script =
        // The root's file system type: mountinfo's field after the " - " separator, for mount point /.
        "awk '$5 == \"/\" { for (i = 7; i <= NF; i++) if ($i == \"-\") { print $(i + 1); exit } }' /proc/self/mountinfo; " +
        "ls /opaque | tr '\\n' ' '; echo; cat /added.txt /keep/kept; " +
        "if [ -e /etc/deleted.conf ]; then echo deleted-visible; else echo deleted-gone; fi; " +
        "echo changed > /keep/kept && cat /keep/kept; touch /new-in-upper && echo writable";

    private TempDir _store = null!;

    public static IEnumerable<string> Images => ["image-oci.tar", "image-docker.tar.gz", "oci-layout-zstd"];

    [OneTimeSetUp]
    public void SetUp()
    {
        Require.Unprivileged();
        _store = new TempDir();
    }

    [OneTimeTearDown]
    public void TearDown() => _store?.Dispose();

    /// <summary>
    /// fuse-overlayfs is skipped only when this host genuinely cannot run it (the same probe auto
    /// uses); under SANDBOX_MUST_WORK=1 that is a failure: ci/setup-host installs it and opens /dev/fuse.
    /// </summary>
    private static void RequireDriver(string driver)
    {
        if (driver == "overlay")
        {
            string? problem = StorageProbe.ProbeKernelOverlay();
            Require.That(problem is null, $"kernel overlayfs cannot be mounted in a user namespace here: {problem}");
        }
        if (driver == "fuse-overlayfs")
        {
            string? program = new StorageProbe(null).FindFuseOverlayfs();
            Require.That(program is not null, "fuse-overlayfs is not installed (ci/setup-host installs it)");
            string? problem = StorageProbe.ProbeFuseOverlayfs(program!);
            Require.That(problem is null, $"fuse-overlayfs cannot mount in a user namespace here: {problem} (ci/setup-host makes /dev/fuse 0666)");
        }
    }

    private static string[] Lines(CliResult r) => r.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries);

    [Test, Combinatorial]
    public void EachDriverShowsExactlyTheImagesFiles(
        [ValueSource(nameof(DriverNames))] string driver,
        [ValueSource(nameof(Images))] string image)
    {
        RequireDriver(driver);
        CliResult r = SandboxCli.Run("run", "--root", _store.Path, "--storage-driver", driver, TestImages.Path(image), "sh", "-c", Script);
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        string[] lines = Lines(r);
        Assert.That(lines.Skip(1), Is.EqualTo(new[] { "new ", "added in layer 3", "kept", "deleted-gone", "changed", "writable" }), r.ToString());
        string? fileSystem = driver switch { "overlay" => "overlay", "fuse-overlayfs" => "fuse.fuse-overlayfs", _ => null };
        if (fileSystem is not null)
            Assert.That(lines[0], Is.EqualTo(fileSystem), "the root is what the driver mounts");
        else
            Assert.That(lines[0], Is.Not.EqualTo("overlay").And.Not.StartWith("fuse"), "the copy is a plain directory");
        if (driver == "copy")
            Assert.That(r.Stderr, Does.Contain("sandbox: warning: the copy storage driver copies the image's layers for every run, which is slow"));
        else
            Assert.That(r.Stderr, Is.Empty, r.ToString());
        Assert.That(Directory.EnumerateFileSystemEntries(Path.Combine(_store.Path, "tmp")), Is.Empty, "a copy is removed after its run");
    }

    [TestCaseSource(nameof(DriverNames))]
    public void TheSandboxsDevIsTheSameUnderEachDriver(string driver)
    {
        // fuse-overlayfs runs on the scratch root with the host's /dev/fuse and /dev/null on a tmpfs
        // of their own, unmounted once it is done: the sandbox's /dev, built there too, keeps neither.
        // Twice: the second run joins the holder's spare, whose /dev is built already (fuse-overlayfs's
        // /dev/fuse used to be made in that one, and so reached the sandbox).
        RequireDriver(driver);
        for (int run = 1; run <= 2; run++)
        {
            CliResult r = SandboxCli.Run("run", "--root", _store.Path, "--storage-driver", driver, TestImages.Path("image-oci.tar"),
                "sh", "-c", "ls -A /dev | tr '\\n' ' '; awk '$5 ~ /^\\/dev/' /proc/self/mountinfo | wc -l");
            Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
            Assert.That(Lines(r), Is.EqualTo(new[] { "core fd full null ptmx pts random shm stderr stdin stdout tty urandom zero 9" }), $"run {run}: {r}");
        }
    }

    public static IEnumerable<string> DriverNames => ["overlay", "fuse-overlayfs", "copy"];

    [TestCaseSource(nameof(DriverNames))]
    public void WritesVanishAndReadOnlyRefusesThemUnderEachDriver(string driver)
    {
        RequireDriver(driver);
        string image = TestImages.Path("image-oci.tar");
        CliResult first = SandboxCli.Run("run", "--root", _store.Path, "--storage-driver", driver, image, "sh", "-c", "echo x > /keep/scratch; cat /keep/scratch");
        Assert.That(first.StdoutText.Trim(), Is.EqualTo("x"), first.ToString());
        CliResult second = SandboxCli.Run("run", "--root", _store.Path, "--storage-driver", driver, image, "sh", "-c", "if [ -e /keep/scratch ]; then echo leaked; else echo fresh; fi");
        Assert.That(second.StdoutText.Trim(), Is.EqualTo("fresh"), second.ToString());
        CliResult readOnly = SandboxCli.Run("run", "--root", _store.Path, "--storage-driver", driver, "--read-only", image, "sh", "-c",
            "cat /added.txt; if touch /keep/x 2>/dev/null; then echo written; else echo refused; fi");
        Assert.That(Lines(readOnly), Is.EqualTo(new[] { "added in layer 3", "refused" }), readOnly.ToString());
    }

    [Test]
    public void AutoPicksKernelOverlayWhereItWorksWithoutAWarning()
    {
        RequireDriver("overlay");
        CliResult r = SandboxCli.Run("run", "--root", _store.Path, TestImages.Path("image-oci.tar"), "sh", "-c", "grep -m1 ' / / ' /proc/self/mountinfo");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText, Does.Contain(" - overlay overlay "));
        Assert.That(r.Stderr, Is.Empty);
        // The probe's answer is cached for this boot: the file says overlay works.
        string cache = StorageProbe.CacheFileFor(_store.Path);
        Assert.That(File.ReadAllLines(cache), Does.Contain("overlay\tok"));
    }

    /// <summary>
    /// Auto's fallback, end to end: the per-boot cache is seeded with a failed kernel overlay probe
    /// (what a kernel older than 5.11 answers), so auto must probe fuse-overlayfs for real, use it,
    /// say so in one warning line, and store that answer too.
    /// </summary>
    [Test]
    public void AutoFallsBackToFuseOverlayfsWhenKernelOverlayIsRefused()
    {
        RequireDriver("fuse-overlayfs");
        using var store = new TempDir();
        var env = new Dictionary<string, string> { ["XDG_RUNTIME_DIR"] = "" }; // the cache in the store, not the user's runtime directory
        string image = TestImages.Path("image-oci.tar");
        CliResult first = SandboxCli.Run(["run", "--root", store.Path, image, "true"], env: env);
        Assert.That(first.ExitCode, Is.EqualTo(0), first.ToString());
        string cache = Path.Combine(store.Path, "storage-probe");
        string[] lines = File.ReadAllLines(cache);
        Assert.That(lines, Does.Contain("overlay\tok"));
        File.WriteAllLines(cache, lines.Select(l => l == "overlay\tok" ? "overlay\tfail\tmount overlay: Operation not permitted (EPERM)" : l));

        CliResult r = SandboxCli.Run(["run", "--root", store.Path, image, "sh", "-c", Script], env: env);
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(Lines(r), Is.EqualTo(new[] { "fuse.fuse-overlayfs", "new ", "added in layer 3", "kept", "deleted-gone", "changed", "writable" }), r.ToString());
        Assert.That(r.Stderr, Is.EqualTo(
            "sandbox: warning: kernel overlayfs cannot be mounted in a user namespace here (mount overlay: Operation not permitted (EPERM)); " +
            "using fuse-overlayfs, which is slower. For kernel overlay: Linux 5.11 or later.\n"));
        Assert.That(File.ReadAllLines(cache).Where(l => l.StartsWith("fuse ", StringComparison.Ordinal)).Single(), Does.EndWith("\tok"));

        // With CAP_SYS_PTRACE the fallback is the copy, also in one line.
        CliResult ptrace = SandboxCli.Run(["run", "--root", store.Path, "--cap-add", "SYS_PTRACE", image, "cat", "/added.txt"], env: env);
        Assert.That(ptrace.ExitCode, Is.EqualTo(0), ptrace.ToString());
        Assert.That(ptrace.Stderr.TrimEnd('\n').Split('\n'), Has.Length.EqualTo(1));
        Assert.That(ptrace.Stderr, Does.Contain("fuse-overlayfs is not used because a payload with CAP_SYS_PTRACE"));
    }

    [Test]
    public void TheEnvironmentVariableChoosesTheDriverAndTheOptionWins()
    {
        var env = new Dictionary<string, string> { ["SANDBOX_STORAGE_DRIVER"] = "copy" };
        string image = TestImages.Path("image-oci.tar");
        CliResult copied = SandboxCli.Run(["run", "--root", _store.Path, image, "cat", "/added.txt"], env: env);
        Assert.That(copied.ExitCode, Is.EqualTo(0), copied.ToString());
        Assert.That(copied.Stderr, Does.Contain("copy storage driver"));
        CliResult overridden = SandboxCli.Run(["run", "--root", _store.Path, "--storage-driver", "overlay", image, "cat", "/added.txt"], env: env);
        Assert.That(overridden.Stderr, Does.Not.Contain("copy storage driver"), overridden.ToString());
        CliResult bad = SandboxCli.Run(["run", "--root", _store.Path, image, "true"], env: new Dictionary<string, string> { ["SANDBOX_STORAGE_DRIVER"] = "vfs" });
        Assert.That(bad.ExitCode, Is.EqualTo(125));
        Assert.That(bad.Stderr, Does.Contain("unknown storage driver 'vfs': use overlay, fuse-overlayfs, copy or auto"));
    }

    /// <summary>
    /// Entries their owner may not read: a 0000 file, and a 0000 directory with a 0000 file in it.
    /// Root-owned in the image, so stored flattened (the caller's). The copy driver once chmod'ed them
    /// in the store for its copy and back after: concurrent runs saw each other's 0400, a killed run
    /// left it for good, and the directory failed every copy run (EACCES). Now such a copy is made by
    /// root of a single-id user namespace, and the store is never written.
    /// </summary>
    [Test]
    public void TheCopyDriverShowsEntriesTheirOwnerCannotReadAndNeverChangesTheStore()
    {
        Require.Command("/bin/busybox");
        using var scratch = new TempDir();
        string store = Path.Combine(scratch.Path, "store");
        var busybox = new LayerTar().Dir("bin").File("bin/busybox", File.ReadAllBytes("/bin/busybox"), 0x1ED);
        foreach (string applet in new[] { "sh", "stat", "cat", "ls" })
            busybox.Symlink("bin/" + applet, "busybox");
        byte[] locked = new LayerTar().File("secret", "root only\n", 0).Dir("z", 0).File("z/f", "in a 0000 directory\n", 0).Build();
        string archive = Path.Combine(scratch.Path, "locked.tar");
        DockerArchive.Write(archive, ["example.com/locked:1"], busybox.Build(), locked);
        CliResult import = SandboxCli.Run("image", "import", "--root", store, "--userns", "single", archive);
        Assert.That(import.ExitCode, Is.EqualTo(0), import.ToString());

        string[] StoreModes() => Directory.GetDirectories(Path.Combine(store, "l"))
            .SelectMany(l => new[] { Path.Combine(l, "secret"), Path.Combine(l, "z") })
            .Where(p => FileSystemCalls.TryLStat(p) is not null)
            .Select(p => $"{Path.GetFileName(p)} {Convert.ToString(FileSystemCalls.TryLStat(p)!.Value.Permissions, 8)}").Order().ToArray();
        Assert.That(StoreModes(), Is.EqualTo(new[] { "secret 0", "z 0" }));

        // Four copy runs at once: each must see the image's modes and contents.
        var runs = Enumerable.Range(0, 4).Select(_ => Task.Run(() => SandboxCli.Run("run", "--root", store, "--userns", "single", "--storage-driver", "copy",
            "example.com/locked:1", "sh", "-c", "stat -c '%a %n' /secret /z /z/f; cat /secret /z/f"))).ToArray();
        Task.WaitAll(runs);
        foreach (CliResult r in runs.Select(t => t.Result))
        {
            Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
            Assert.That(r.StdoutText, Is.EqualTo("0 /secret\n0 /z\n0 /z/f\nroot only\nin a 0000 directory\n"), r.ToString());
        }
        Assert.That(StoreModes(), Is.EqualTo(new[] { "secret 0", "z 0" }), "the store's layer is as it was imported");
        Assert.That(Directory.EnumerateFileSystemEntries(Path.Combine(store, "tmp")).Where(e => !e.EndsWith(".lock", StringComparison.Ordinal)), Is.Empty);
    }

    /// <summary>
    /// An image of more layers than one kernel overlay mount's options hold runs under auto, on
    /// fuse-overlayfs (or a copy), with a warning that says why; it failed with "too many layers".
    /// </summary>
    [Test]
    public void AnImageOfMoreLayersThanOneOverlayMountTakesRunsUnderAuto()
    {
        Require.Command("/bin/busybox");
        using var scratch = new TempDir();
        string store = Path.Combine(scratch.Path, "store");
        var busybox = new LayerTar().Dir("bin").File("bin/busybox", File.ReadAllBytes("/bin/busybox"), 0x1ED).Symlink("bin/cat", "busybox");
        var layers = new List<byte[]> { busybox.Build() };
        for (int i = 1; i < 200; i++)
            layers.Add(new LayerTar().File($"f{i}", $"{i}\n").Build());
        string archive = Path.Combine(scratch.Path, "many.tar");
        DockerArchive.Write(archive, ["example.com/many:1"], [.. layers]);
        CliResult r = SandboxCli.Run("run", "--root", store, archive, "cat", "/f1", "/f199");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText, Is.EqualTo("1\n199\n"));
        Assert.That(r.Stderr, Does.Contain("the image has 200 layers, more than one kernel overlay mount's options hold"), r.ToString());
    }

    [Test]
    public void KeepWithCopyKeepsTheWholeRootAndSaysWhere()
    {
        CliResult r = SandboxCli.Run("run", "--root", _store.Path, "--storage-driver", "copy", "--keep", TestImages.Path("image-oci.tar"), "sh", "-c", "echo changed > /keep/kept; rm /added.txt");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        var match = System.Text.RegularExpressions.Regex.Match(r.Stderr, "the root's changes are kept in (\\S+)");
        Assert.That(match.Success, Is.True, r.Stderr);
        string root = match.Groups[1].Value;
        Assert.That(Path.GetFileName(root), Is.EqualTo("root"));
        Assert.That(File.ReadAllText(Path.Combine(root, "keep", "kept")), Is.EqualTo("changed\n"));
        Assert.That(File.Exists(Path.Combine(root, "added.txt")), Is.False);
        Assert.That(File.Exists(Path.Combine(root, "bin", "busybox")), Is.True, "the whole root, not only the changes");
    }

    [Test]
    public void ACopyHoldingFilesOfSubordinateIdsIsStillRemoved()
    {
        Require.SubordinateRange();
        CliResult r = SandboxCli.Run("run", "--root", _store.Path, "--userns", "subuid", "--storage-driver", "copy", TestImages.Path("image-oci.tar"), "sh", "-c",
            "mkdir -p /var/x && chmod 777 /var/x && su nobody -s /bin/sh -c 'mkdir /var/x/y && touch /var/x/y/f && chmod 755 /var/x/y' && stat -c %u /var/x/y");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText.Trim(), Is.EqualTo("65534"));
        Assert.That(Directory.EnumerateFileSystemEntries(Path.Combine(_store.Path, "tmp")), Is.Empty);
    }

    /// <summary>The owners of ci/make-test-images' layer 3 (/home/user 0700 of 1000:1000), as each driver shows them under a subordinate range.</summary>
    [TestCaseSource(nameof(DriverNames))]
    public void EachDriverShowsTheImagesOwnersUnderASubordinateRange(string driver)
    {
        RequireDriver(driver);
        Require.SubordinateRange();
        CliResult r = SandboxCli.Run("run", "--root", _store.Path, "--userns", "subuid", "--storage-driver", driver, TestImages.Path("image-oci.tar"),
            "stat", "-c", "%u:%g %a %n", "/home", "/home/user", "/home/user/notes.txt", "/keep/kept");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(Lines(r), Is.EqualTo(new[] { "0:0 755 /home", "1000:1000 700 /home/user", "1000:1000 640 /home/user/notes.txt", "0:0 644 /keep/kept" }), r.ToString());
        Assert.That(Directory.EnumerateFileSystemEntries(Path.Combine(_store.Path, "tmp")), Is.Empty);
    }

    [Test]
    public void FuseOverlayfsIsRefusedToAPayloadThatMayPtraceIt()
    {
        CliResult r = SandboxCli.Run("run", "--root", _store.Path, "--storage-driver", "fuse-overlayfs", "--cap-add", "SYS_PTRACE", TestImages.Path("image-oci.tar"), "true");
        Assert.That(r.ExitCode, Is.EqualTo(125), r.ToString());
        Assert.That(r.Stderr, Does.Contain("CAP_SYS_PTRACE"));
    }

    [Test]
    public void TheFuseOverlayfsDaemonDiesWithTheSandboxAndThePayloadCannotReachItsFiles()
    {
        RequireDriver("fuse-overlayfs");
        CliResult r = SandboxCli.Run("run", "--root", _store.Path, "--storage-driver", "fuse-overlayfs", TestImages.Path("image-oci.tar"), "sh", "-c",
            "pid=$(pidof fuse-overlayfs); echo daemon=${pid:+yes}; ls /proc/$pid/root/ >/dev/null 2>&1 && echo reached || echo refused; " +
            "readlink /proc/$pid/fd/3 >/dev/null 2>&1 && echo fd-reached || echo fd-refused");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(Lines(r), Is.EqualTo(new[] { "daemon=yes", "refused", "fd-refused" }), r.ToString());
        // Nothing of the sandbox outlives it: no fuse-overlayfs of ours mounted on the store.
        Assert.That(HostProcesses.WaitUntil(() => !OwnFuseOverlayfsRunning(_store.Path), TimeSpan.FromSeconds(5)), Is.True, "the daemon outlived its sandbox");
    }

    private static bool OwnFuseOverlayfsRunning(string store) =>
        Directory.EnumerateDirectories("/proc").Select(Path.GetFileName).Where(n => n!.All(char.IsAsciiDigit)).Any(pid =>
        {
            try
            {
                return File.ReadAllText($"/proc/{pid}/cmdline").Contains(store, StringComparison.Ordinal);
            }
            catch (IOException)
            {
                return false;
            }
            catch (UnauthorizedAccessException)
            {
                return false;
            }
        });
}
