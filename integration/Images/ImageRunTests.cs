namespace Sandbox.IntegrationTests.Images;

/// <summary>
/// Running images made by real tools (umoci builds a three-layer busybox image with a deleted file
/// and an opaque directory; skopeo writes it as OCI layout, OCI archive and docker archive, gzip and
/// zstd: ci/make-test-images): `sandbox run IMAGE` must show exactly the files the image has, on
/// overlayfs mounted inside the user namespace, with the image's Env, Cmd and WorkingDir.
/// </summary>
[TestFixture]
[Parallelizable(ParallelScope.None)]
public sealed class ImageRunTests
{
    private TempDir _store = null!;

    public static IEnumerable<string> Images =>
        ["oci-layout", "oci-layout-zstd", "image-oci.tar", "image-oci-zstd.tar", "image-docker.tar", "image-docker.tar.gz"];

    [OneTimeSetUp]
    public void SetUp()
    {
        Require.Unprivileged();
        _store = new TempDir();
    }

    [OneTimeTearDown]
    public void TearDown() => _store?.Dispose();

    /// <summary>
    /// A run reads the image's record, then takes the store's shared use lock, which makes prune wait.
    /// An `image rm` and a `prune` that come in between remove the record and the layers: the run
    /// says the image was removed (exit 125), not that the store lost a layer. strace holds the run's
    /// first flock(2), that lock, back for 3 s to open the window.
    /// </summary>
    [Test]
    public void AnImageRemovedAndPrunedWhileARunStartsIsReportedAsRemoved()
    {
        Require.Command("/usr/bin/strace");
        using var store = new TempDir();
        string cli = SandboxCli.Binary;
        Assert.That(SandboxCli.Run("image", "import", "--root", store.Path, TestImages.Path("image-oci.tar"), "--name", "race:1").ExitCode, Is.EqualTo(0));
        CliResult r = SandboxCli.Shell(
            $"(strace -f -qq -o /dev/null -e trace=flock -e inject=flock:delay_enter=3000000:when=1 '{cli}' run --root '{store.Path}' race:1 true; echo \"run=$?\") & " +
            $"sleep 1.5; '{cli}' image rm --root '{store.Path}' race:1 >/dev/null && '{cli}' image prune --root '{store.Path}' >/dev/null && echo pruned; wait");
        Assert.That(r.StdoutText, Does.Contain("pruned").And.Contain("run=125"), r.ToString());
        Assert.That(r.Stderr, Does.Contain($": the image was removed from {store.Path} (sandbox image rm) while this run was starting: import it again"), r.ToString());
    }

    [Test]
    public void ARootBeforeDoubleDashThatIsNotFoundIsNamedNotRunAsTheCommand()
    {
        CliResult image = SandboxCli.Run("run", "--root", _store.Path, "no-such-image", "--", "true");
        Assert.That(image.ExitCode, Is.EqualTo(125), image.ToString());
        Assert.That(image.Stderr, Does.StartWith($"sandbox: no-such-image: no such image in {_store.Path}, directory or image archive (import one with: sandbox image import FILE --name no-such-image)"));
        CliResult path = SandboxCli.Run("run", "/no-such-rootfs", "--", "true");
        Assert.That(path.ExitCode, Is.EqualTo(125), path.ToString());
        Assert.That(path.Stderr, Does.StartWith("sandbox: /no-such-rootfs: no such directory or image archive"));
    }

    [TestCaseSource(nameof(Images))]
    public void TheImageRunsItsOwnCommandWithItsConfig(string image)
    {
        CliResult r = SandboxCli.Run("run", "--root", _store.Path, TestImages.Path(image));
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText, Is.EqualTo("hello from the image\n"));
    }

    [TestCaseSource(nameof(Images))]
    public void TheRootShowsExactlyTheImagesFiles(string image)
    {
        CliResult r = SandboxCli.Run("run", "--root", _store.Path, TestImages.Path(image), "sh", "-c",
            "pwd; echo $GREETING; id -u; ls /opaque | tr '\\n' ' '; echo; cat /added.txt /keep/kept; " +
            "if [ -e /etc/deleted.conf ]; then echo deleted-visible; else echo deleted-gone; fi; " +
            "echo changed > /keep/kept && cat /keep/kept; touch /new-in-upper && echo writable");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries), Is.EqualTo(new[]
        {
            "/keep", "hello", "0", "new ", "added in layer 3", "kept", "deleted-gone", "changed", "writable",
        }));
    }

    [Test]
    public void AStoreMadeReadOnlyStillRunsItsImages()
    {
        // A run only reads the store: its shared "in use" lock (flock(2)) is taken on a descriptor
        // opened read-only when the lock file cannot be opened for writing (a store on a read-only
        // volume, or made read-only by its owner). Before, the open failed with a stack trace (exit 134).
        using var store = new TempDir();
        Assert.That(SandboxCli.Run("image", "import", "--root", store.Path, TestImages.Path("image-oci.tar"), "--name", "ro:1").ExitCode, Is.EqualTo(0));
        CliResult r;
        try
        {
            Assert.That(SandboxCli.Shell($"chmod a-w '{store.Path}' '{store.Path}/gc.lock'").ExitCode, Is.EqualTo(0));
            r = SandboxCli.Run("run", "--root", store.Path, "ro:1", "cat", "/added.txt");
        }
        finally
        {
            SandboxCli.Shell($"chmod u+w '{store.Path}' '{store.Path}/gc.lock'");
            SandboxCli.Run("image", "rm", "--root", store.Path, "ro:1");
            SandboxCli.Run("image", "prune", "--root", store.Path);
        }
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText, Is.EqualTo("added in layer 3\n"));
    }

    [Test]
    public void AStoreOthersMayWriteToIsRefusedNotTakenForACommand()
    {
        using var store = new TempDir();
        Assert.That(SandboxCli.Run("image", "import", "--root", store.Path, TestImages.Path("image-oci.tar"), "--name", "open:1").ExitCode, Is.EqualTo(0));
        SandboxCli.Shell($"chmod 777 '{store.Path}'");
        CliResult r = SandboxCli.Run("run", "--root", store.Path, "open:1", "true");
        SandboxCli.Shell($"chmod 700 '{store.Path}'");
        Assert.That(r.ExitCode, Is.EqualTo(125), r.ToString());
        Assert.That(r.Stderr, Does.Contain($"image store {store.Path} is writable by every user (mode 777)").And.Contain($"chmod go-w {store.Path}"), r.ToString());
        SandboxCli.Run("image", "rm", "--root", store.Path, "open:1");
        SandboxCli.Run("image", "prune", "--root", store.Path);
    }

    [Test]
    public void WritesVanishWithTheSandboxAndReadOnlyRootsRefuseThem()
    {
        string image = TestImages.Path("image-oci.tar");
        CliResult first = SandboxCli.Run("run", "--root", _store.Path, image, "sh", "-c", "echo x > /keep/scratch; cat /keep/scratch");
        Assert.That(first.StdoutText.Trim(), Is.EqualTo("x"), first.ToString());
        CliResult second = SandboxCli.Run("run", "--root", _store.Path, image, "sh", "-c", "if [ -e /keep/scratch ]; then echo leaked; else echo fresh; fi");
        Assert.That(second.StdoutText.Trim(), Is.EqualTo("fresh"), "each run starts from the image, not from the last run's writes");

        CliResult readOnly = SandboxCli.Run("run", "--root", _store.Path, "--read-only", image, "sh", "-c", "if touch /keep/x 2>/dev/null; then echo written; else echo refused; fi");
        Assert.That(readOnly.StdoutText.Trim(), Is.EqualTo("refused"), readOnly.ToString());
    }

    [Test]
    public void EachRunSeesItsOwnRootWhateverOverlayTheHoldersSpareCameWith()
    {
        // The holder's next spare comes with the last run's overlay mounted (sandbox_init.c,
        // mount_overlay): the same image again starts on it, with a fresh upper; another store's
        // overlay, a directory root and --read-only must each still see exactly their own root.
        string image = TestImages.Path("image-oci.tar");
        using var otherStore = new TempDir();
        using var directory = new TempDir();
        Directory.CreateDirectory(Path.Combine(directory.Path, "bin"));
        File.Copy("/bin/busybox", Path.Combine(directory.Path, "bin", "busybox"));
        File.WriteAllText(Path.Combine(directory.Path, "only-in-the-directory"), "");
        const string Probe = "if [ -e /keep/scratch ]; then echo leaked; else echo fresh; fi; echo x > /keep/scratch; cat /added.txt";
        for (int round = 0; round < 3; round++)
        {
            foreach (string store in new[] { _store.Path, _store.Path, otherStore.Path, _store.Path })
            {
                CliResult r = SandboxCli.Run("run", "--root", store, image, "sh", "-c", Probe);
                Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
                Assert.That(r.StdoutText, Is.EqualTo("fresh\nadded in layer 3\n"), $"round {round}, store {store}: {r}");
            }
            CliResult dir = SandboxCli.Run("run", directory.Path, "/bin/busybox", "ls", "/");
            Assert.That(dir.ExitCode, Is.EqualTo(0), dir.ToString());
            Assert.That(dir.StdoutText, Does.Contain("only-in-the-directory").And.Not.Contain("added.txt"), dir.ToString());
            CliResult readOnly = SandboxCli.Run("run", "--root", _store.Path, "--read-only", image, "sh", "-c",
                "cat /added.txt; if touch /keep/x 2>/dev/null; then echo written; else echo refused; fi");
            Assert.That(readOnly.StdoutText, Is.EqualTo("added in layer 3\nrefused\n"), readOnly.ToString());
        }
    }

    [Test]
    public void AnImportedNameRunsAndBindsAndLimitsWorkTheSame()
    {
        string image = TestImages.Path("image-docker.tar");
        CliResult import = SandboxCli.Run("image", "import", "--root", _store.Path, image, "--name", "it/busybox:1");
        Assert.That(import.ExitCode, Is.EqualTo(0), import.ToString());
        using var data = new TempDir();
        File.WriteAllText(Path.Combine(data.Path, "in.txt"), "from the host\n");
        CliResult r = SandboxCli.Run("run", "--root", _store.Path, "-v", $"{data.Path}:/data:ro", "--hostname", "img", "it/busybox:1",
            "sh", "-c", "cat /data/in.txt; cat /proc/self/status | grep -c NoNewPrivs; ls /proc | grep -c '^[0-9]'; test -c /dev/null && echo dev-ok");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText, Does.StartWith("from the host\n1\n").And.EndWith("dev-ok\n"));
    }

    [Test]
    public void UserNamesResolveThroughTheImagesPasswd()
    {
        Require.SubordinateRange();
        CliResult r = SandboxCli.Run("run", "--root", _store.Path, "--userns", "subuid", "-u", "nobody", TestImages.Path("image-oci.tar"),
            "sh", "-c", "id -u; id -g; echo $HOME; touch /etc/x 2>/dev/null && echo root-writable || echo not-root");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries), Is.EqualTo(new[] { "65534", "65534", "/nonexistent", "not-root" }));
    }

    [Test]
    public void KeepLeavesTheChangesInAnUpperDirectoryAndSaysWhere()
    {
        CliResult r = SandboxCli.Run("run", "--root", _store.Path, "--keep", TestImages.Path("image-oci.tar"), "sh", "-c", "echo changed > /keep/kept; rm /added.txt");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        var match = System.Text.RegularExpressions.Regex.Match(r.Stderr, "the root's changes are kept in (\\S+)");
        Assert.That(match.Success, Is.True, r.Stderr);
        string upper = match.Groups[1].Value;
        Assert.That(File.ReadAllText(Path.Combine(upper, "keep", "kept")), Is.EqualTo("changed\n"));
        Assert.That(Directory.EnumerateFileSystemEntries(upper).Select(Path.GetFileName), Does.Contain("added.txt"), "the deletion is kept as a whiteout");
    }
}
