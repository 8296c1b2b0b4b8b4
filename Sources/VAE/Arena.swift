/// One named tensor of the model, as PyTorch would name it (`encoder.0.weight`, shape [500, 784]).
public struct TensorSpec: Sendable, Hashable {
  public let name: String
  public let shape: [Int]
  public var count: Int { shape.reduce(1, *) }
  public init(name: String, shape: [Int]) {
    self.name = name
    self.shape = shape
  }
}

/// The one order list: every arena (parameters, gradients, Adam moments) uses this layout, so a
/// tensor is the same `Range<Int>` in each of them.
public struct ParameterLayout: Sendable, Hashable {
  public let specs: [TensorSpec]
  public let offsets: [Int]
  public let total: Int
  /// Each name's index in `specs` (the first, should a name occur twice).
  private let indices: [String: Int]

  public init(specs: [TensorSpec]) {
    var offsets: [Int] = []
    var at = 0
    for s in specs {
      offsets.append(at)
      at += s.count
    }
    self.specs = specs
    self.offsets = offsets
    self.total = at
    var indices = [String: Int](minimumCapacity: specs.count)
    for (i, s) in specs.enumerated() where indices[s.name] == nil { indices[s.name] = i }
    self.indices = indices
  }

  /// Layouts are equal when their specs are (the rest follows from them).
  public static func == (a: ParameterLayout, b: ParameterLayout) -> Bool { a.specs == b.specs }

  public func hash(into hasher: inout Hasher) { hasher.combine(specs) }

  public func range(of index: Int) -> Range<Int> { offsets[index]..<(offsets[index] + specs[index].count) }

  /// The index of the tensor called `name` in `specs` (a hash lookup), or nil.
  public func index(of name: String) -> Int? { indices[name] }

  public func range(named name: String) -> Range<Int>? { index(of: name).map(range(of:)) }
}

/// One contiguous, zero-initialised `Float` buffer laid out by a `ParameterLayout`.
public final class Arena: @unchecked Sendable {
  public let layout: ParameterLayout
  public let data: UnsafeMutableBufferPointer<Float>
  private let owned: Bool

  public init(layout: ParameterLayout) {
    self.layout = layout
    data = .allocate(capacity: max(layout.total, 1))
    data.initialize(repeating: 0)
    owned = true
  }

  /// An arena over memory someone else owns and frees (e.g. an MPI shared-memory window),
  /// zeroed here.
  public init(layout: ParameterLayout, external: UnsafeMutablePointer<Float>) {
    self.layout = layout
    data = UnsafeMutableBufferPointer(start: external, count: layout.total)
    data.update(repeating: 0)
    owned = false
  }

  /// A view of memory someone else owns and keeps alive, as it is (not zeroed).
  public init(layout: ParameterLayout, view: UnsafeMutablePointer<Float>) {
    self.layout = layout
    data = UnsafeMutableBufferPointer(start: view, count: layout.total)
    owned = false
  }

  deinit { if owned { data.deallocate() } }

  public var base: UnsafeMutablePointer<Float> { data.baseAddress! }
  public var count: Int { layout.total }

  public func zero() { data.update(repeating: 0) }

  public func copy(from other: Arena) {
    precondition(other.layout.total == layout.total)
    base.update(from: other.base, count: layout.total)
  }

  /// The values of one tensor, copied out.
  public func values(named name: String) -> [Float]? {
    guard let r = layout.range(named: name) else { return nil }
    return Array(UnsafeBufferPointer(rebasing: data[r]))
  }

  /// Overwrites one tensor. Returns false when the name is unknown or the count differs.
  @discardableResult
  public func setValues(named name: String, _ values: [Float]) -> Bool {
    guard let r = layout.range(named: name), r.count == values.count else { return false }
    values.withUnsafeBufferPointer { (base + r.lowerBound).update(from: $0.baseAddress!, count: r.count) }
    return true
  }

  public func toArray() -> [Float] { Array(UnsafeBufferPointer(data)) }
}

/// A caller-owned scratch buffer (activations). Allocated once, freed on deinit.
public final class Buffer: @unchecked Sendable {
  public let capacity: Int
  public let ptr: UnsafeMutablePointer<Float>
  public init(_ capacity: Int) {
    self.capacity = capacity
    ptr = .allocate(capacity: max(capacity, 1))
    ptr.initialize(repeating: 0, count: max(capacity, 1))
  }
  deinit { ptr.deallocate() }
  public func toArray(_ n: Int? = nil) -> [Float] { Array(UnsafeBufferPointer(start: ptr, count: n ?? capacity)) }
  public func set(_ values: [Float]) {
    precondition(values.count <= capacity)
    values.withUnsafeBufferPointer { ptr.update(from: $0.baseAddress!, count: values.count) }
  }
}
