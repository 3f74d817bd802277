using System.Collections.Immutable;
using Sandbox.Cli.CommandLine;

namespace Sandbox.Cli;

/// <summary><c>sandbox run [OPTIONS] [ROOT] [--] COMMAND [ARG...]</c>, docker-like.</summary>
internal sealed class RunCommand : Command
{
    private static readonly List<IDisposable> s_storeInUse = new();
    private readonly SandboxOptions _options = new();
    private readonly Option<string?> _workdir = new("--workdir", "-w")
    {
        Description = "Working directory inside the sandbox (default /)",
        HelpName = "DIR",
    };
    private readonly Option<string?> _store = StoreOption.Create();
    private readonly Option<bool> _readOnly = new("--read-only")
    {
        Description = "Make an image's root file system read-only (host and directory roots always are)",
    };
    private readonly Option<bool> _keep = new("--keep")
    {
        Description = "Keep an image run's changes to its root (the overlay's upper directory; the whole root with --storage-driver copy) after the run, and print where",
    };
    private readonly Option<string?> _storageDriver = StorageDriverOption.Create();
    private readonly Option<string?> _platform = new("--platform")
    {
        Description = "From a multi-platform image archive, use OS/ARCH[/VARIANT] (default: this host's)",
        HelpName = "OS/ARCH",
    };
    private readonly Argument<string?> _root = new("ROOT")
    {
        Description = "host (default); a directory holding a root filesystem; an image name or digest from the store; or an image archive (docker save, OCI archive) or OCI layout directory, imported first",
        Arity = ArgumentArity.ZeroOrOne,
    };
    private readonly Argument<string[]> _command = new("COMMAND")
    {
        Description = "The command and its arguments (put -- before it when it starts with -)",
        Arity = ArgumentArity.ZeroOrMore,
    };

    public RunCommand() : base("run", "Run a command in a new sandbox")
    {
        foreach (Option option in _options.All)
            Options.Add(option);
        Options.Add(_workdir);
        Options.Add(_store);
        Options.Add(_readOnly);
        Options.Add(_keep);
        Options.Add(_storageDriver);
        Options.Add(_platform);
        Arguments.Add(_root);
        Arguments.Add(_command);
    }

    /// <summary>
    /// Splits <c>run</c>'s tokens into sandbox options, an optional ROOT, and the payload's command.
    /// A first word is the ROOT when `--` follows it, or when it is "host", an existing directory
    /// named as a path (with a '/': `./rootfs`, `~/rootfs/alpine`; a bare `test` is the command even
    /// where a directory test/ is in the working directory), an image archive, or the name or digest
    /// of an image in the store.
    /// </summary>
    public (List<string> OwnTokens, ImmutableArray<string> PayloadCommand) Split(IReadOnlyList<string> tokens) => Split(tokens, out _);

    public (List<string> OwnTokens, ImmutableArray<string> PayloadCommand) Split(IReadOnlyList<string> tokens, out bool helpRequested)
    {
        string? store = StoreDirectory(tokens);
        return SandboxOptions.Split(this, tokens, t => t == "host" || (t.Contains('/') && Directory.Exists(t)) || IsImageArchive(t) || ImageExists(t, store), maxPositionals: 1, out helpRequested, stopAfterPositionals: true);
    }

    // --root DIR or --root=DIR, for the image lookup before the parse. A loop, not LINQ, on the
    // warm-start path (RootfsPlanner says why).
    private static string? StoreDirectory(IReadOnlyList<string> tokens)
    {
        for (int i = 0; i < tokens.Count; i++)
        {
            if (tokens[i] == "--root")
            {
                if (i + 1 < tokens.Count)
                    return tokens[i + 1];
                break;
            }
        }
        for (int i = 0; i < tokens.Count; i++)
        {
            if (tokens[i].StartsWith("--root=", StringComparison.Ordinal))
                return tokens[i][7..];
        }
        return null;
    }

    /// <summary>docker save, podman save and skopeo write these; anything else that exists is a command.</summary>
    internal static bool IsImageArchive(string path) =>
        // The name first: an image's name (busybox:latest) costs no lookups.
        (path.EndsWith(".tar", StringComparison.Ordinal) || path.EndsWith(".tar.gz", StringComparison.Ordinal) ||
         path.EndsWith(".tgz", StringComparison.Ordinal) || path.EndsWith(".tar.zst", StringComparison.Ordinal) ||
         path.EndsWith(".oci", StringComparison.Ordinal)) && File.Exists(path);

    /// <summary>The image <see cref="Split"/> found for its first word, reused by <see cref="BuildSpec"/> instead of reading the store twice.</summary>
    private (string Name, string? Store, Images.ImageRecord Image)? _splitFound;

    private bool ImageExists(string name, string? store)
    {
        // A command such as `ls` is looked up too: cheap (the store's records), and only when it is
        // the first word after the options.
        if (name.StartsWith('-') || name.StartsWith('/') || name.StartsWith('.'))
            return false;
        try
        {
            Images.ImageRecord? image = new Storage.ImageStore(Storage.StoreLocation.Resolve(store)).Find(name);
            if (image is not null)
                _splitFound = (name, store, image);
            return image is not null;
        }
        catch (SandboxException e) when (e.Code is SandboxErrorCode.ImageAmbiguous or SandboxErrorCode.StoreNotPrivate || store is not null)
        {
            // ROOT, whose lookup says what is wrong: an image's name or digest, only not one image; a
            // store others could have put this name into; a store named with --root that cannot be used.
            return true;
        }
        catch (SandboxException)
        {
            return false;
        }
    }

    public SandboxSpec BuildSpec(ParseResult parse, ImmutableArray<string> command)
    {
        StorageDriver driver = StorageDriverOption.Resolve(parse.GetValue(_storageDriver));
        string? root = parse.GetValue(_root), store = parse.GetValue(_store);
        Images.ImageRecord? found = _splitFound is var (splitName, splitStore, splitImage) && splitName == root && splitStore == store ? splitImage : null;
        RootSpec rootSpec = ResolveRoot(root, store, parse.GetValue(_readOnly), parse.GetValue(_platform), _options.UserNamespace(parse), driver, found);
        if (parse.GetValue(_keep))
        {
            if (rootSpec is not ImageRoot image)
                throw new SandboxException(SandboxErrorCode.InvalidSpec, "--keep applies to image roots only (a host or directory root is never written)");
            // Its upper and work directories, or the copy's root, are made once the driver is known.
            string kept = new Storage.ImageStore(Storage.StoreLocation.Resolve(parse.GetValue(_store))).CreateKeptRunDirectory();
            rootSpec = image with { KeepDirectory = kept };
        }
        return _options.Apply(parse, new SandboxSpec(command) { Root = rootSpec, WorkingDirectory = parse.GetValue(_workdir) });
    }

    internal static RootSpec ResolveRoot(string? root, string? store, bool readOnly, string? platform,
        UserNamespaceMode userNamespace = UserNamespaceMode.Auto, StorageDriver driver = StorageDriver.Auto, Images.ImageRecord? found = null)
    {
        if (root is null or "host")
            return RootSpec.Host;
        // Split found this image after finding no directory or archive of that name: not looked up again.
        if (found is not null)
            return InUse(new Storage.ImageStore(Storage.StoreLocation.Resolve(store)), found, readOnly, driver);
        bool directory = Directory.Exists(root);
        bool layout = directory && File.Exists(Path.Combine(root, "oci-layout"));
        if (directory && !layout)
            return RootSpec.Directory(root);
        var images = new Storage.ImageStore(Storage.StoreLocation.Resolve(store));
        Images.ImageRecord image;
        if (layout || IsImageArchive(root))
        {
            // An archive or layout given as ROOT is imported first (once: its layers are shared).
            // Owned as the run will see them: kept under the subordinate range it maps, or flattened.
            var ownership = Storage.ImportOwnership.Resolve(userNamespace, Identity.IdentityEnvironment.Current());
            image = ImportProgressView.Run(!Console.IsErrorRedirected, progress => images.Import(root, name: null, progress, platform, ownership));
        }
        else
        {
            image = images.Find(root) ?? throw new SandboxException(SandboxErrorCode.ImageNotFound, root.Contains('/')
                ? $"{root}: no such directory or image archive (a root file system is a directory; an image, a file from docker save, podman save or skopeo)"
                : $"{root}: no such image in {images.Root}, directory or image archive (import one with: sandbox image import FILE --name {root})");
        }
        return InUse(images, image, readOnly, driver);
    }

    private static ImageRoot InUse(Storage.ImageStore images, Images.ImageRecord image, bool readOnly, StorageDriver driver)
    {
        // `image prune` must not delete layers while they are mounted: the shared lock is held until
        // this process exits (flock(2) locks go with the process).
        s_storeInUse.Add(images.AcquireUse());
        if (!images.StillHas(image))
        {
            throw new SandboxException(SandboxErrorCode.ImageNotFound,
                $"{image.Name ?? image.Digest}: the image was removed from {images.Root} (sandbox image rm) while this run was starting: import it again (sandbox image import FILE)");
        }
        return new ImageRoot(image, readOnly, Driver: driver);
    }

    public bool Stats(ParseResult parse) => _options.Stats(parse);

    public string EventsFormat(ParseResult parse) => _options.EventsFormat(parse);
}
