/// `s` with control characters escaped (`\n`, `\r`, `\t`, `\u{…}`), so that an error message
/// that quotes it stays on one line.
public func oneLine(_ s: String) -> String {
  var out = ""
  out.reserveCapacity(s.utf8.count)
  for u in s.unicodeScalars {
    switch u {
    case "\n": out += "\\n"
    case "\r": out += "\\r"
    case "\t": out += "\\t"
    default:
      if u.value < 0x20 || u.value == 0x7F || u.value == 0x2028 || u.value == 0x2029
        || (0x80..<0xA0).contains(u.value)
      {
        out += "\\u{\(String(u.value, radix: 16))}"
      } else {
        out.unicodeScalars.append(u)
      }
    }
  }
  return out
}

/// `s` in double quotes, one line.
func quoted(_ s: String) -> String { "\"" + oneLine(s) + "\"" }
