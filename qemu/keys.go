package qemu

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// qkeyCodes are QEMU's key names (the QKeyCode enum of qapi/ui.json),
// which QMP's send-key takes.
var qkeyCodes = strings.Fields(`unmapped shift shift_r alt alt_r ctrl ctrl_r menu esc
	1 2 3 4 5 6 7 8 9 0 minus equal backspace tab q w e r t y u i o p bracket_left bracket_right ret
	a s d f g h j k l semicolon apostrophe grave_accent backslash z x c v b n m comma dot slash
	asterisk spc caps_lock f1 f2 f3 f4 f5 f6 f7 f8 f9 f10 num_lock scroll_lock kp_divide kp_multiply
	kp_subtract kp_add kp_enter kp_decimal sysrq kp_0 kp_1 kp_2 kp_3 kp_4 kp_5 kp_6 kp_7 kp_8 kp_9
	less f11 f12 print home pgup pgdn end left up down right insert delete stop again props undo
	front copy open paste find cut lf help meta_l meta_r compose pause ro hiragana henkan yen
	muhenkan katakanahiragana kp_comma kp_equals power sleep wake audionext audioprev audiostop
	audioplay audiomute volumeup volumedown mediaselect mail calculator computer ac_home ac_back
	ac_forward ac_refresh ac_bookmarks lang1 lang2 f13 f14 f15 f16 f17 f18 f19 f20 f21 f22 f23 f24`)

// keyAliases are other names users type for keys, as QEMU's human
// monitor and virsh accept some of them.
var keyAliases = map[string]string{
	"del": "delete", "enter": "ret", "return": "ret", "space": "spc", "escape": "esc",
	"control": "ctrl", "pageup": "pgup", "pagedown": "pgdn", "win": "meta_l", "super": "meta_l",
	"altgr": "alt_r", "bksp": "backspace", "ins": "insert", "prtsc": "print",
}

// maxComboKeys bounds the keys pressed at once in one combination.
const maxComboKeys = 8

// ParseCombo parses a key combination as QEMU's sendkey writes it, key
// names joined by '-' and pressed together ("ctrl-alt-del", "shift-a",
// "ret"), into QEMU key names.
func ParseCombo(combo string) ([]string, error) {
	if combo == "" {
		return nil, fmt.Errorf("an empty key combination")
	}
	parts := strings.Split(strings.ToLower(combo), "-")
	if len(parts) > maxComboKeys {
		return nil, fmt.Errorf("key combination %q: at most %d keys at once", combo, maxComboKeys)
	}
	keys := make([]string, 0, len(parts))
	for _, p := range parts {
		if a, ok := keyAliases[p]; ok {
			p = a
		}
		if !slices.Contains(qkeyCodes, p) || p == "unmapped" {
			return nil, fmt.Errorf("key combination %q: no key %q (keys are QEMU's names: a-z, 0-9, ret, spc, esc, tab, ctrl, alt, shift, delete, f1-f24, minus, ...)", combo, p)
		}
		keys = append(keys, p)
	}
	return keys, nil
}

// keyValue is one key of send-key's keys argument.
type keyValue struct {
	Type string `json:"type"`
	Data string `json:"data"`
}

// SendKey presses keys together, as a user would, and lets them go
// after holdMS milliseconds (0: QEMU's default, 100 ms).
func (m *Monitor) SendKey(ctx context.Context, keys []string, holdMS int) error {
	args := struct {
		Keys     []keyValue `json:"keys"`
		HoldTime int        `json:"hold-time,omitempty"`
	}{HoldTime: holdMS}
	for _, k := range keys {
		args.Keys = append(args.Keys, keyValue{Type: "qcode", Data: k})
	}
	return m.conn.Execute(ctx, "send-key", args, nil)
}
