using System.Collections.Immutable;

namespace Sandbox.Security.Seccomp;

/// <summary>
/// Compiles a <see cref="SeccompProfile"/> into a classic BPF program for seccomp(2)'s
/// SECCOMP_SET_MODE_FILTER. Pure computation: nothing here talks to the kernel; the native executor
/// loads the result after PR_SET_NO_NEW_PRIVS, right before execve.
/// </summary>
/// <remarks>
/// <para>Layout:</para>
/// <code>
///   ld [arch]; jeq AUDIT_ARCH, +1, +0; ret FOREIGN          (seccomp_filter.rst: check arch first)
///   ld [nr];   jgt MAX_NR, +0, +3;     jeq -1, +1, +0; ret ENOSYS; ret ALLOW
///                                       (newer than the table, and x32 numbers; -1: a call a tracer skipped)
///   the number's outcome, by binary search over ranges of numbers (a range is numbers in a row that
///   get the same action, or one call with argument rules):
///     node: jge FIRST_OF_RIGHT, +len(left), +0; left; right
///           (or: jge FIRST_OF_RIGHT, +0, +1; ja +len(left); left; right, when left is longer than 255)
///     leaf: ret ACTION
///       or: the call's rules: argument checks that jump to the rule's end on failure; ret ACTION;
///           ...; ret FALLBACK                                (a rule without conditions, else the default)
/// </code>
/// <para>Conditional jumps have 8-bit offsets. Every subtree ends in RETs on all its paths, so a node
/// only jumps over its left subtree, with BPF_JA (32-bit offset) when that is too far: the program
/// never needs a long conditional jump, whatever the profile's size. The A register holds the number
/// throughout the search; only a leaf's argument rules load other words, and they never fall out of it.</para>
/// <para>Cost: since Linux 5.11 the kernel emulates the filter once per syscall number when it is
/// loaded and from then on skips it for the numbers it always allows (the "constant action bitmap",
/// kernel/seccomp.c seccomp_cache_prepare, run under the sighand lock): every path here that does not
/// load an argument qualifies, so in a deny-list only the calls with argument rules (clone, ioctl,
/// personality, socket) run it. That emulation walks the path once for each of the ~460 numbers, so
/// the path's length is paid at every sandbox start: with a linear list of JEQs (this compiler before
/// the search) the default program's 97 instructions took 85 µs to load, a one-instruction program
/// 16 to 22 µs, and a 97-instruction one that returns after three 28 µs (a C loop of seccomp(2) in
/// fresh children on this project's CI machine). The search's paths are about 15 instructions long.</para>
/// </remarks>
public static class SeccompCompiler
{
    /// <summary>nr == -1 as the filter sees it: a call a tracer has cancelled.</summary>
    public const uint SkippedSyscall = 0xffffffff;

    /// <summary>Argument conditions in one rule (libseccomp allows one per argument; Docker profiles use one or two).</summary>
    public const int MaxConditions = 32;

    public static ImmutableArray<BpfInstruction> Compile(SeccompProfile profile, SeccompArchitecture architecture)
    {
        ArgumentNullException.ThrowIfNull(profile);
        ArgumentNullException.ThrowIfNull(architecture);

        var program = new List<BpfInstruction>();

        // 1. Architecture. Without this a process could call through another ABI whose numbers mean
        // other calls (on x86_64, i386's int 0x80: 11 is execve, not munmap).
        program.Add(Bpf.LoadAbsolute(SeccompData.Arch));
        program.Add(BpfInstruction.Jump(Bpf.JumpEqual, architecture.AuditArch, 1, 0));
        program.Add(Bpf.Return(profile.ForeignArchitectureAction.ReturnValue));

        // 2. Syscall number, and numbers the table does not know. This comes before any rule: x32
        // calls arrive with AUDIT_ARCH_X86_64 and nr | 0x40000000, which equals no x86_64 number, so
        // in a deny-list they would otherwise fall through to ALLOW. libseccomp kills them when x32
        // is not in the filter; here they get the unknown-syscall action (ENOSYS), which is what a
        // kernel with x32 disabled answers (CONFIG_X86_X32_ABI off, or Debian's default
        // syscall.x32=n): a program probing x32 sees "not supported" instead of dying, and no x32
        // call reaches a rule either way. The comparison is unsigned: negative numbers are "above".
        //
        // Except nr == -1, which is allowed: it is no syscall but the ptrace convention for skipping
        // one (the tracer sets nr to -1 and the return value itself; seccomp runs again after the
        // tracer since Linux 4.8). An ERRNO here would overwrite the tracer's return value (see
        // arch/arm64/kernel/syscall.c, el0_svc_common), breaking strace's fault injection, rr and
        // proot inside the sandbox; allowed, nothing runs and a plain syscall(-1) still gets ENOSYS
        // from the kernel.
        program.Add(Bpf.LoadAbsolute(SeccompData.Nr));
        if (profile.UnknownSyscallAction is { } unknown)
        {
            program.Add(BpfInstruction.Jump(Bpf.JumpGreater, (uint)architecture.MaxSyscall, 0, 3));
            program.Add(BpfInstruction.Jump(Bpf.JumpEqual, SkippedSyscall, 1, 0));
            program.Add(Bpf.Return(unknown.ReturnValue));
            program.Add(Bpf.Return(SeccompReturn.Allow));
        }
        else if (architecture.X32SyscallBit is { } x32)
        {
            program.Add(BpfInstruction.Jump(Bpf.JumpGreaterOrEqual, x32, 0, 3));
            program.Add(BpfInstruction.Jump(Bpf.JumpEqual, SkippedSyscall, 1, 0));
            program.Add(Bpf.Return(profile.ForeignArchitectureAction.ReturnValue));
            program.Add(Bpf.Return(SeccompReturn.Allow));
        }
        else
        {
            program.Add(BpfInstruction.Jump(Bpf.JumpEqual, SkippedSyscall, 0, 1));
            program.Add(Bpf.Return(SeccompReturn.Allow));
        }

        // 3. The number, by binary search over the ranges of numbers that share one outcome (see
        // the remarks: the kernel walks this part once per syscall number when the filter is loaded).
        List<NumberRange> ranges = Ranges(Group(profile, architecture), profile.DefaultAction);
        EmitSearch(program, ranges, 0, ranges.Count);

        if (program.Count > Bpf.MaxInstructions)
            throw new SandboxException(SandboxErrorCode.InvalidSpec,
                $"seccomp profile{(profile.Name is null ? "" : $" '{profile.Name}'")} compiles to {program.Count} BPF instructions for {architecture.Name}; the kernel accepts at most {Bpf.MaxInstructions} (BPF_MAXINSNS): use fewer argument rules");

        ImmutableArray<BpfInstruction> result = [.. program];
        string? problem = Verify(result);
        if (problem is not null)
            throw new SandboxException(SandboxErrorCode.Internal, $"the seccomp compiler produced an invalid program: {problem}");
        return result;
    }

    /// <summary>The profile's syscall names that <paramref name="architecture"/>'s table does not have (skipped by <see cref="Compile"/>, as libseccomp skips them).</summary>
    public static IReadOnlyList<string> UnknownNames(SeccompProfile profile, SeccompArchitecture architecture) =>
        profile.Rules.SelectMany(r => r.Names.IsDefault ? [] : r.Names).Where(n => !architecture.TryGetSyscall(n, out _)).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();

    /// <summary>
    /// The checks the kernel's classic BPF checker (net/core/filter.c bpf_check_classic) and
    /// seccomp_check_filter make, for the instructions this compiler emits: length 1..4096, jumps
    /// forward and inside the program, loads word-aligned inside seccomp_data, last instruction a
    /// RET. Returns null when the program passes, else what is wrong.
    /// </summary>
    public static string? Verify(ImmutableArray<BpfInstruction> program)
    {
        if (program.IsDefaultOrEmpty || program.Length > Bpf.MaxInstructions)
            return $"length {(program.IsDefault ? 0 : program.Length)} is outside 1..{Bpf.MaxInstructions}";
        for (int pc = 0; pc < program.Length; pc++)
        {
            BpfInstruction i = program[pc];
            switch (i.Code)
            {
                case Bpf.LoadWordAbsolute:
                    if (i.K % 4 != 0 || i.K >= SeccompData.Size)
                        return $"{pc}: load from offset {i.K} outside struct seccomp_data";
                    break;
                case Bpf.AndK:
                case Bpf.ReturnK:
                    break;
                case Bpf.JumpAlways:
                    if (i.K >= program.Length - pc - 1)
                        return $"{pc}: ja +{i.K} leaves the program";
                    break;
                case Bpf.JumpEqual:
                case Bpf.JumpGreater:
                case Bpf.JumpGreaterOrEqual:
                case Bpf.JumpSet:
                    if (pc + 1 + Math.Max(i.JumpTrue, i.JumpFalse) >= program.Length)
                        return $"{pc}: {Bpf.Disassemble(i)} leaves the program";
                    break;
                default:
                    return $"{pc}: unexpected instruction {Bpf.Disassemble(i)}";
            }
        }
        return program[^1].Code == Bpf.ReturnK ? null : "the last instruction is not a RET";
    }

    private sealed class SyscallGroup(int number, SeccompAction fallback, List<SeccompRule> conditional)
    {
        public int Number { get; } = number;
        public SeccompAction Fallback { get; } = fallback;
        public List<SeccompRule> Conditional { get; } = conditional;
    }

    private static List<SyscallGroup> Group(SeccompProfile profile, SeccompArchitecture architecture)
    {
        var rulesByNumber = new SortedDictionary<int, List<SeccompRule>>();
        for (int r = 0; r < profile.Rules.Length; r++)
        {
            SeccompRule rule = profile.Rules[r];
            Validate(rule, r, profile);
            if (rule.Names.IsDefaultOrEmpty)
                continue;
            foreach (string name in rule.Names)
            {
                // Names this architecture does not have (i386-only calls, stime on x86_64, a newer
                // call than the headers) are skipped, as libseccomp's seccomp_rule_add does for an
                // unknown name resolved to __NR_SCMP_ERROR and Docker ignores.
                if (!architecture.TryGetSyscall(name, out int number))
                    continue;
                if (!rulesByNumber.TryGetValue(number, out List<SeccompRule>? list))
                    rulesByNumber[number] = list = [];
                if (!list.Contains(rule))
                    list.Add(rule);
            }
        }

        var groups = new List<SyscallGroup>();
        foreach ((int number, List<SeccompRule> rules) in rulesByNumber)
        {
            SeccompAction fallback = rules.Where(r => r.IsUnconditional).Select(r => r.Action)
                .OrderByDescending(a => a.Severity).ThenByDescending(a => a.Data).DefaultIfEmpty(profile.DefaultAction).First();
            List<SeccompRule> conditional = rules.Where(r => !r.IsUnconditional)
                .OrderByDescending(r => r.Action.Severity).ToList(); // OrderBy is stable: profile order within a severity
            // Trailing conditional rules whose action is the fallback change nothing: the call gets
            // that action whether their conditions hold or not. (One earlier in the list does matter:
            // it stops a less severe rule after it from matching.)
            while (conditional.Count > 0 && conditional[^1].Action == fallback)
                conditional.RemoveAt(conditional.Count - 1);
            if (conditional.Count == 0 && fallback == profile.DefaultAction)
                continue;
            groups.Add(new SyscallGroup(number, fallback, conditional));
        }
        return groups;
    }

    private static void Validate(SeccompRule rule, int index, SeccompProfile profile)
    {
        if (rule.Conditions.IsDefaultOrEmpty)
            return;
        // A condition compiles to at most 5 instructions and a rule's failure jump spans the rule:
        // this bound keeps it within a conditional jump's 8-bit offset.
        if (rule.Conditions.Length > MaxConditions)
            throw new SandboxException(SandboxErrorCode.InvalidSpec,
                $"seccomp profile{(profile.Name is null ? "" : $" '{profile.Name}'")}, rule {index}: {rule.Conditions.Length} argument conditions; at most {MaxConditions} are supported");
        foreach (SeccompArgCondition c in rule.Conditions)
        {
            string where = $"seccomp profile{(profile.Name is null ? "" : $" '{profile.Name}'")}, rule {index} ({string.Join(", ", rule.Names.IsDefault ? [] : rule.Names)})";
            if (c.Index is < 0 or >= SeccompData.ArgCount)
                throw new SandboxException(SandboxErrorCode.InvalidSpec, $"{where}: argument index {c.Index} is outside 0..5");
            if (!Enum.IsDefined(c.Op))
                throw new SandboxException(SandboxErrorCode.InvalidSpec, $"{where}: unknown comparison {(int)c.Op}");
            if (c.LowWordOnly && (c.Value > uint.MaxValue || c.ValueTwo > uint.MaxValue))
                throw new SandboxException(SandboxErrorCode.InvalidSpec, $"{where}: a 32-bit comparison with a value above 0xffffffff");
        }
    }

    /// <summary>
    /// Numbers from <see cref="First"/> up to the next range's first number (the last range runs to
    /// 2³²−1) that all get <see cref="Action"/>, or one number whose <see cref="Group"/> has argument rules.
    /// </summary>
    private readonly record struct NumberRange(uint First, SeccompAction Action, SyscallGroup? Group);

    /// <summary>The ranges, in order, that cover every 32-bit number; neighbours with the same plain action are merged.</summary>
    private static List<NumberRange> Ranges(List<SyscallGroup> groups, SeccompAction defaultAction)
    {
        var ranges = new List<NumberRange>();
        void Add(NumberRange range)
        {
            if (ranges.Count > 0 && ranges[^1].Group is null && range.Group is null && ranges[^1].Action == range.Action)
                return;
            ranges.Add(range);
        }
        uint next = 0; // the first number not yet covered
        foreach (SyscallGroup group in groups) // ascending by number (Group sorts them)
        {
            uint number = (uint)group.Number;
            if (number > next)
                Add(new NumberRange(next, defaultAction, null));
            Add(group.Conditional.Count > 0 ? new NumberRange(number, group.Fallback, group) : new NumberRange(number, group.Fallback, null));
            next = number + 1; // syscall numbers are small: no overflow
        }
        Add(new NumberRange(next, defaultAction, null));
        return ranges;
    }

    /// <summary>
    /// Emits the decision for <paramref name="ranges"/>[lo..hi), with the number in A: a balanced tree
    /// of JGEs whose leaves return, or run one call's argument rules. Each subtree is self-contained
    /// (every path through it ends in a RET), so a node only has to jump over its left subtree: with
    /// its false offset (fall through into the left, true to the right) when the left is at most 255
    /// long, else through a BPF_JA, whose offset is 32 bits.
    /// </summary>
    private static void EmitSearch(List<BpfInstruction> program, List<NumberRange> ranges, int lo, int hi)
    {
        if (hi - lo == 1)
        {
            NumberRange leaf = ranges[lo];
            if (leaf.Group is null)
                program.Add(Bpf.Return(leaf.Action.ReturnValue));
            else
                EmitArgumentRules(program, leaf.Group);
            return;
        }
        int mid = (lo + hi) / 2;
        var left = new List<BpfInstruction>();
        EmitSearch(left, ranges, lo, mid);
        if (left.Count <= byte.MaxValue)
        {
            program.Add(BpfInstruction.Jump(Bpf.JumpGreaterOrEqual, ranges[mid].First, (byte)left.Count, 0));
        }
        else
        {
            program.Add(BpfInstruction.Jump(Bpf.JumpGreaterOrEqual, ranges[mid].First, 0, 1));
            program.Add(BpfInstruction.Statement(Bpf.JumpAlways, (uint)left.Count));
        }
        program.AddRange(left);
        EmitSearch(program, ranges, mid, hi);
    }

    /// <summary>One call's rules in order, then its fallback: every rule either returns or jumps to the next one.</summary>
    private static void EmitArgumentRules(List<BpfInstruction> program, SyscallGroup group)
    {
        foreach (SeccompRule rule in group.Conditional)
        {
            var asm = new RuleAssembler();
            foreach (SeccompArgCondition condition in rule.Conditions)
                EmitCondition(asm, condition);
            asm.Emit(Bpf.Return(rule.Action.ReturnValue));
            program.AddRange(asm.Assemble());
        }
        program.Add(Bpf.Return(group.Fallback.ReturnValue));
    }

    /// <summary>
    /// One condition, on all 64 bits of the argument unless <see cref="SeccompArgCondition.LowWordOnly"/>.
    /// Falls through when it holds, jumps to the rule's end (<see cref="RuleAssembler.Fail"/>) when not.
    /// Unsigned 64-bit order from two 32-bit words: compare the high words; only when they are equal
    /// do the low words decide.
    /// </summary>
    private static void EmitCondition(RuleAssembler asm, SeccompArgCondition c)
    {
        Label pass = asm.NewLabel();
        Label fail = asm.Fail;
        Label next = Label.Next;
        uint lo = (uint)c.Value;
        uint hi = (uint)(c.Value >> 32);
        bool wide = !c.LowWordOnly;
        uint loWord = SeccompData.ArgLow(c.Index);
        uint hiWord = SeccompData.ArgHigh(c.Index);

        switch (c.Op)
        {
            case SeccompArgOp.EqualTo:
                if (wide)
                {
                    asm.Load(hiWord);
                    asm.Jump(Bpf.JumpEqual, hi, next, fail);
                }
                asm.Load(loWord);
                asm.Jump(Bpf.JumpEqual, lo, next, fail);
                break;

            case SeccompArgOp.NotEqual:
                if (wide)
                {
                    asm.Load(hiWord);
                    asm.Jump(Bpf.JumpEqual, hi, next, pass);
                }
                asm.Load(loWord);
                asm.Jump(Bpf.JumpEqual, lo, fail, next);
                break;

            case SeccompArgOp.GreaterThan:
            case SeccompArgOp.GreaterOrEqual:
                if (wide)
                {
                    asm.Load(hiWord);
                    asm.Jump(Bpf.JumpGreater, hi, pass, next);
                    asm.Jump(Bpf.JumpEqual, hi, next, fail);
                }
                asm.Load(loWord);
                asm.Jump(c.Op == SeccompArgOp.GreaterThan ? Bpf.JumpGreater : Bpf.JumpGreaterOrEqual, lo, next, fail);
                break;

            case SeccompArgOp.LessThan:
            case SeccompArgOp.LessOrEqual:
                if (wide)
                {
                    asm.Load(hiWord);
                    asm.Jump(Bpf.JumpGreater, hi, fail, next);
                    asm.Jump(Bpf.JumpEqual, hi, next, pass);
                }
                asm.Load(loWord);
                // a < v  ⇔  !(a >= v);  a <= v  ⇔  !(a > v)
                asm.Jump(c.Op == SeccompArgOp.LessThan ? Bpf.JumpGreaterOrEqual : Bpf.JumpGreater, lo, fail, next);
                break;

            case SeccompArgOp.MaskedEqual:
                ulong mask = c.LowWordOnly ? c.Value & 0xffffffff : c.Value;
                ulong expected = c.ValueTwo;
                if (wide && ((mask >> 32) != 0 || (expected >> 32) != 0))
                    EmitMaskedWord(asm, hiWord, (uint)(mask >> 32), (uint)(expected >> 32));
                EmitMaskedWord(asm, loWord, (uint)mask, (uint)expected);
                break;

            default:
                throw new SandboxException(SandboxErrorCode.InvalidSpec, $"unknown seccomp comparison {(int)c.Op}");
        }
        asm.Mark(pass);
    }

    /// <summary>(word &amp; mask) == expected for one 32-bit half.</summary>
    private static void EmitMaskedWord(RuleAssembler asm, uint offset, uint mask, uint expected)
    {
        if ((expected & ~mask) != 0)
        {
            asm.Jump(Bpf.JumpAlways, 0, asm.Fail, Label.Next); // can never hold
            return;
        }
        if (mask == 0)
            return; // always holds
        asm.Load(offset);
        if (expected == 0)
        {
            // No bit of the mask set: one JSET (what the clone namespace-flag check compiles to).
            asm.Jump(Bpf.JumpSet, mask, asm.Fail, Label.Next);
        }
        else
        {
            asm.Emit(BpfInstruction.Statement(Bpf.AndK, mask));
            asm.Jump(Bpf.JumpEqual, expected, Label.Next, asm.Fail);
        }
    }

    private sealed class Label
    {
        public static readonly Label Next = new();
        public int Position = -1;
    }

    /// <summary>Assembles one rule: short forward jumps to labels inside the rule or to its end.</summary>
    private sealed class RuleAssembler
    {
        private readonly List<(BpfInstruction Instruction, Label? True, Label? False)> _items = [];

        /// <summary>The rule's end: the instruction after its RET, where the next rule (or the group's fallback) starts.</summary>
        public Label Fail { get; } = new();

        public Label NewLabel() => new();

        public void Mark(Label label) => label.Position = _items.Count;

        public void Emit(BpfInstruction instruction) => _items.Add((instruction, null, null));

        public void Load(uint offset) => Emit(Bpf.LoadAbsolute(offset));

        public void Jump(ushort code, uint k, Label whenTrue, Label whenFalse) =>
            _items.Add((BpfInstruction.Jump(code, k, 0, 0), whenTrue, whenFalse));

        public List<BpfInstruction> Assemble()
        {
            Fail.Position = _items.Count;
            var result = new List<BpfInstruction>(_items.Count);
            for (int pc = 0; pc < _items.Count; pc++)
            {
                (BpfInstruction i, Label? t, Label? f) = _items[pc];
                if (i.Code == Bpf.JumpAlways && t is not null)
                    result.Add(BpfInstruction.Statement(Bpf.JumpAlways, (uint)Offset(pc, t)));
                else if (t is not null && f is not null)
                    result.Add(i with { JumpTrue = checked((byte)Offset(pc, t)), JumpFalse = checked((byte)Offset(pc, f)) });
                else
                    result.Add(i);
            }
            return result;
        }

        private static int Offset(int pc, Label target)
        {
            if (ReferenceEquals(target, Label.Next))
                return 0;
            int offset = target.Position - pc - 1;
            if (target.Position < 0 || offset < 0)
                throw new InvalidOperationException("seccomp compiler: jump to an unplaced or earlier label");
            return offset;
        }
    }
}
